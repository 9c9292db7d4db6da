"""The English sentences the stand-in talking set speaks: 40 for training, 10 + 10 held out.

Written for this project (no corpus text). They are short, read-speech sentences rich in the
contrasts a lip-sync model must learn: bilabial closures (p, b, m), labiodentals (f, v), dental
fricatives (th), rounded and spread vowels, open vowels and consonant clusters. The validation and
test sentences never occur in training, so the held-out speakers also say unseen text.
"""

from __future__ import annotations

__all__ = ["TRAIN_SENTENCES", "VAL_SENTENCES", "TEST_SENTENCES", "ALL_SENTENCES"]

TRAIN_SENTENCES: tuple[str, ...] = (
    "Maybe the baker will bring a bigger basket of plums tomorrow.",
    "Five brave sailors moved the heavy boat past the harbour wall.",
    "The thin thief thought nobody would notice the missing watch.",
    "Please pass me both maps before the meeting begins.",
    "A warm breeze moved over the open fields of barley.",
    "Father found the old violin beneath a pile of blankets.",
    "Mothers and babies waited patiently by the pharmacy door.",
    "The bright moon floated above the quiet lagoon.",
    "Bob paid for a cup of hot soup and a plum pie.",
    "We often rode our bikes along the muddy path by the farm.",
    "My brother bought a blue umbrella in the market square.",
    "Those three boys threw pebbles into the pond all afternoon.",
    "Put the purple box on the top shelf, above the books.",
    "A family of foxes lives behind the abandoned barn.",
    "Nobody believed the wild story about the flying balloon.",
    "Thursday morning the museum opens at half past nine.",
    "The pilot smiled and pointed at the mountains below.",
    "Warm bread and butter make a humble but perfect meal.",
    "Every evening we walk the dog beside the babbling brook.",
    "The woman from Boston moved with her family to Peru.",
    "Bring a map, a lamp and a bottle of water for the trip.",
    "The chef whipped the cream and poured it over the berries.",
    "Big waves pounded the beach for most of the winter.",
    "Although the path was rough, both hikers reached the top.",
    "Mabel hummed a happy tune while she painted the fence.",
    "The farmer's van broke down on the bumpy mountain road.",
    "Few people remember the famous voyage of the Blue Falcon.",
    "A bumblebee buzzed from blossom to blossom in the park.",
    "Please move your boots away from the burning fire.",
    "The movie about the pirate ship was far too long.",
    "Our neighbour bakes apple pies every Sunday in autumn.",
    "The baby laughed as the puppy chased a rubber ball.",
    "Bright lamps hung above the marble floor of the palace.",
    "My mother keeps photographs of the whole family in a box.",
    "Vivid purple flowers bloomed along the southern wall.",
    "The boxer jumped back and blocked the powerful punch.",
    "Bamboo grows remarkably fast in warm and humid climates.",
    "Both of them agreed to meet by the pub at half past seven.",
    "The map showed a path through the marsh to the harbour.",
    "An orange balloon drifted up above the rooftops of the town.",
)

VAL_SENTENCES: tuple[str, ...] = (
    "Paul combed his beard before the big job interview.",
    "The moth flew past the bright bulb of the porch lamp.",
    "Maybe we should borrow a boat and paddle to the island.",
    "The brown bear ambled through the berry bushes at dawn.",
    "My friend plays the piano better than anybody I know.",
    "Five pumpkins sat on the bench by the garden path.",
    "Bubbles floated up from the bottom of the warm bath.",
    "The shepherd moved the flock over the barren moor.",
    "Mop the bathroom floor before the plumber arrives.",
    "A bamboo bridge spans the broad river near the temple.",
)

TEST_SENTENCES: tuple[str, ...] = (
    "The puppet maker built a marvellous wooden palace.",
    "Pam bought a bundle of maple boards from the mill.",
    "Bright blue paint covered both of the boat's masts.",
    "Harvest time brings plump apples and ripe pumpkins.",
    "The lamb bleated by the barn while the farmer slept.",
    "Umbrellas popped open as the rain began to pour.",
    "My parents visited Bombay and Madrid last summer.",
    "The famous boxer beat the champion in the final bout.",
    "Please place the map by the pepper mill on the table.",
    "A big moth bumped into the window above my bed.",
)

ALL_SENTENCES: tuple[str, ...] = TRAIN_SENTENCES + VAL_SENTENCES + TEST_SENTENCES
