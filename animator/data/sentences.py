"""English sentences for the stand-in talking set: 60 written by hand and a grammar for thousands.

Everything here was written for this project (no corpus text). The hand-written sentences (40 for
training, 10 + 10 held out) are short read-speech sentences rich in the contrasts a lip-sync model
must learn. `generate_sentences` draws many more from a small grammar whose word lists are built
for phonetic balance: bilabials (p, b, m) next to every English vowel and diphthong, in onsets,
codas and clusters (pl, br, mp, mb), with alveolars and velars (t, d, n, k, g), labiodentals (f,
v), dental fricatives (th) and rounded vowels (oo, oh, aw, ow) throughout. Coverage is measured
in docs/training_data.md (eSpeak's own phonemes of the generated pool).

`sentence_pool(seed)` splits hand-written and generated text into train / val / test with no
sentence in two splits.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "TRAIN_SENTENCES",
    "VAL_SENTENCES",
    "TEST_SENTENCES",
    "ALL_SENTENCES",
    "generate_sentences",
    "sentence_pool",
]

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

# ------------------------------------------------------------------------------ the grammar
# Word lists are space-separated; the grammar never needs more than plain English morphology.
_NAMES = """Bob Pam Mabel Ben Pete Molly Bruno Paula Boris Mia Barbara Pablo Emma Tom Debbie
Bobby Maggie Philip Abby Omar Penny Poppy Amos Bill Pauline Beth Kim Gabe Tim Dan Greg Fiona
Victor Vera Ruth Hugo Lou Judy Noah Owen Ruby Bernie Imogen Boyd Moira Tobias Mamadou Priya
Bao Amber Cooper Palmer Rupert Brooke Wilma Morgan Boone Pearl Mona Abe Pippa Ambrose Bianca"""

_PEOPLE = """baker|plumber|pilot|farmer|neighbour|boxer|poet|mayor|monk|pupil|banker|bishop|
captain|barber|pianist|umpire|miner|nurse|potter|butcher|mapmaker|bus driver|shepherd|librarian|
zookeeper|trumpet player|beekeeper|mechanic|cook|tailor|builder|painter|fisherman|professor|
postman|porter|waiter|vet"""

_RELATIVES = "mother brother father grandmother grandpa aunt uncle cousin nephew neighbour boss"

_ANIMALS = """puppy parrot beaver bumblebee pony moth mule bobcat possum pigeon hippo lamb
mouse ape buffalo puffin wombat poodle bulldog magpie bear mare"""

# (singular, plural or "-" when the grammar should not use a plural)
_NOUNS = """map lamp bottle basket pumpkin apple bubble pebble bucket blanket book boot broom mop
pipe pepper plum pie pot pan parcel pillow puppet rope tub tube cup cap bench bowl ball balloon
banjo bike boat bell barrel beam drum stamp stump plank pump mirror mug muffin melon magnet
mitten motor marble pamphlet puzzle poem piano lemon umbrella envelope hammer trumpet cabbage
carpet compass album vase violin fan feather fork photo van oven wagon kettle ticket key
robe comb globe tomb bomb dome bamboo moon spoon poodle map sponge pamphlet backpack teapot
bathtub cupboard paintbrush toothbrush newspaper blueprint bagpipe lollipop popcorn bean bun
bun button pebble maple boulder bulb bubble puppy poppy pomegranate pineapple papaya mango
bagel pickle pudding pancake lamb jam ham biscuit soup rubber mat helmet hamper pear
bonfire thimble thermos beard bathrobe mouthpiece empire vampire mask"""

_IRREGULAR_PLURALS = {"mouse": "mice", "potato": "potatoes", "mango": "mangoes"}

_ADJECTIVES = """big purple bumpy empty brown broken plump pale bold moist warm shabby humble
lumpy pink blue damp smooth soft pretty small tiny heavy cheap flat deep rough famous nimble
simple tubby mossy foamy bouncy spotty pointy polished golden wooden woollen frozen open old
odd amber maple marble bamboo bright poor proper plain pompous puffy boring bulky baggy bumpy
dim mild mouldy mighty muddy plastic prim precious pebbly bubbly rubbery beautiful obvious
awful enormous abominable impossible impressive upbeat spare pure thick thin
thorny"""

_VERBS = """buy:bought pack:packed paint:painted push:pushed pull:pulled open:opened move:moved
bring:brought drop:dropped mop:mopped bump:bumped stamp:stamped grab:grabbed rub:rubbed
wipe:wiped polish:polished keep:kept tap:tapped patch:patched pick:picked pop:popped stop:stopped
dump:dumped map:mapped chop:chopped scrub:scrubbed fix:fixed find:found feed:fed fold:folded
carry:carried cover:covered dip:dipped shape:shaped wrap:wrapped tip:tipped empty:emptied
weigh:weighed measure:measured borrow:borrowed repair:repaired boil:boiled bake:baked
bag:bagged mail:mailed bury:buried swap:swapped climb:climbed hum:hummed embrace:embraced
examine:examined upgrade:upgraded promise:promised improve:improved compare:compared
unpack:unpacked dump:dumped peel:peeled pour:poured probe:probed bounce:bounced blame:blamed
bathe:bathed model:modelled admire:admired remember:remembered imagine:imagined"""

_PLACES = """by the pump|behind the barn|beneath the bridge|past the pub|up the bumpy path|on the
top shelf|in the bathtub|under the maple tree|beside the pond|by the pier|at the market|in the
basement|near the museum|over the marsh|into the bin|onto the boat|across the meadow|along the
beach|by the pool|at the bus stop|on the balcony|in the cupboard|behind the pavilion|in Bombay|
near Boston|in Madrid|by the temple|below the lamp post|at the bottom of the map|up the ramp|
beside the bamboo fence|on the marble bench|in the moonlight|by the plum trees|at the pharmacy|
past the plumbing shop|in the pumpkin patch|by the open window|on the boardwalk|in the playground|
behind the post office|above the bakery|at the top of the tower|by the bumper cars|in Paris|
near Memphis|on the Amazon|at the zoo|in the attic|beneath the bed|by the mailbox"""

_TIMES = """before bedtime|every morning|on Monday|by midnight|in May|after the storm|last
Tuesday|at noon|every summer|in a moment|on a breezy afternoon|tomorrow morning|this evening|
before the bus came|by half past two|at the weekend|in the rain|before breakfast|after lunch|
in September|at dawn|in the spring|some time ago|every other week|at the moment|by the time
the music stopped|in November|on Boxing Day|after the movie"""

_MANNERS = """politely|promptly|happily|bravely|calmly|boldly|quietly|patiently|by mistake|in a
hurry|with a smile|very slowly|at top speed|as a joke|on purpose|without a word|twice|for
a bet|for my mum|for the baby|with both hands|in the dim light"""

_NUMBERS = """two|three|four|five|six|seven|eight|nine|ten|a dozen|several|a few|plenty of|some|
both|many|a hundred|fifteen|twelve"""

_MOODS = """pleased|upset|amazed|bored|embarrassed|puzzled|happy|grumpy|proud|impatient|
surprised|baffled|delighted|calm|jumpy"""

_TEMPLATES = (
    "{Subject} {past} {a_object} {place} {time}.",
    "{Name} {past} the {adjective} {noun} {place}.",
    "Please {verb} the {adjective} {noun} {place}.",
    "Did {name} {verb} the {noun} {time}?",
    "{Name} and {name2} {past} {number} {adjective} {nouns} {place}.",
    "Maybe {subject} will {verb} {a_object} {time}.",
    "Why did {subject} {verb} the {adjective} {noun}?",
    "{Time}, {subject} {past} the {noun} {manner}.",
    "{Subject} {past} the {noun} and {past2} the {noun2}.",
    "The {adjective} {noun} {place} belongs to {name}.",
    "How many {nouns} did {name} {verb} {place}?",
    "{Name} asked me to {verb} the {adjective} {noun} {time}.",
    "We {past} {number} {nouns} {time}.",
    "If {name} {past} the {noun}, {subject} will be {mood}.",
    "Nobody {past} the {adjective} {noun} {manner}.",
    "My {relative} {past} {a_object} for {name} {time}.",
    "There was {a_object} {place}, so {name} {past} it.",
    "{Name} {past} the {noun} {manner}, but it was too {adjective}.",
    "The {animal} {past} the {adjective} {noun} {place}.",
    "{Subject} was {mood} about the {adjective} {noun}.",
    "Bring me {number} {adjective} {nouns} from {place_noun}, {name}.",
    "{Name} never {past} {a_object} {place}.",
    "Who {past} the {noun} {place}?",
    "I think {subject} {past} the {noun} {time}.",
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(text.split()))  # unique, in order


def _phrases(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(" ".join(p.split()) for p in text.split("|")))


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


_LISTS = {
    "name": _words(_NAMES),
    "people": _phrases(_PEOPLE),
    "relative": _words(_RELATIVES),
    "animal": _words(_ANIMALS),
    "noun": _words(_NOUNS),
    "adjective": _words(_ADJECTIVES),
    "verb": tuple(tuple(pair.split(":")) for pair in _words(_VERBS)),
    "place": _phrases(_PLACES),
    "time": _phrases(_TIMES),
    "manner": _phrases(_MANNERS),
    "number": _phrases(_NUMBERS),
    "mood": _phrases(_MOODS),
}


def _subject(rng: np.random.Generator) -> str:
    """A person or animal as a sentence subject, lower case ("the baker", "my aunt", "Bob")."""
    kind = rng.integers(4)
    if kind == 0:
        return str(rng.choice(_LISTS["name"]))
    if kind == 1:
        return "my " + str(rng.choice(_LISTS["relative"]))
    if kind == 2:
        return "the " + str(rng.choice(_LISTS["animal"]))
    return "the " + str(rng.choice(_LISTS["people"]))


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _one_sentence(rng: np.random.Generator) -> str:
    template = str(rng.choice(_TEMPLATES))
    verbs = _LISTS["verb"]
    base, past = verbs[int(rng.integers(len(verbs)))]
    _, past2 = verbs[int(rng.integers(len(verbs)))]
    adjective = str(rng.choice(_LISTS["adjective"]))
    noun = str(rng.choice(_LISTS["noun"]))
    number = str(rng.choice(_LISTS["number"]))
    name, name2 = (str(n) for n in rng.choice(_LISTS["name"], size=2, replace=False))
    subject = _subject(rng)
    place = str(rng.choice(_LISTS["place"]))
    time = str(rng.choice(_LISTS["time"]))
    fields = {
        "name": name,
        "name2": name2,
        "subject": subject,
        "verb": base,
        "past": past,
        "past2": past2,
        "adjective": adjective,
        "noun": noun,
        "noun2": str(rng.choice(_LISTS["noun"])),
        # "both" counts two; "a dozen" and the rest take any plural
        "nouns": _plural(noun),
        "number": "two" if number == "both" else number,
        "a_object": f"{_article(adjective)} {adjective} {noun}",
        "place": place,
        # a place phrase as the object of "from": drop its preposition
        "place_noun": place.split(" ", 1)[1] if " the " in f" {place}" else "the market",
        "time": time,
        "manner": str(rng.choice(_LISTS["manner"])),
        "mood": str(rng.choice(_LISTS["mood"])),
        "relative": str(rng.choice(_LISTS["relative"])),
        "animal": str(rng.choice(_LISTS["animal"])),
    }
    fields.update({_capitalise(k): _capitalise(v) for k, v in list(fields.items())})
    return template.format(**fields)


def generate_sentences(count: int, seed: int, *, exclude: set[str] | frozenset = frozenset()):
    """`count` distinct sentences from the grammar (deterministic in `seed`), none in `exclude`.

    Returns a tuple of strings, in the order drawn.
    """
    rng = np.random.default_rng([seed, 0x5E47])
    seen: dict[str, None] = {}
    tries = 0
    while len(seen) < count:
        sentence = _one_sentence(rng)
        tries += 1
        if tries > 50 * count + 1000:  # pragma: no cover - the grammar yields millions
            raise RuntimeError(f"the sentence grammar ran dry after {len(seen)} sentences")
        if sentence not in exclude:
            seen.setdefault(sentence)
    return tuple(seen)


def sentence_pool(train: int, val: int, test: int, seed: int) -> dict[str, tuple[str, ...]]:
    """Texts per split: the hand-written ones first, then generated ones, no text in two splits.

    Each split gets exactly the requested count (hand-written sentences beyond it are unused).
    """
    wanted = {"train": train, "val": val, "test": test}
    written = {"train": TRAIN_SENTENCES, "val": VAL_SENTENCES, "test": TEST_SENTENCES}
    extra = max(0, sum(wanted[s] - len(written[s]) for s in wanted))
    generated = list(generate_sentences(extra, seed, exclude=set(ALL_SENTENCES)))
    pool = {}
    for split in ("train", "val", "test"):
        own = list(written[split][: wanted[split]])
        need = wanted[split] - len(own)
        pool[split] = tuple(own + generated[:need])
        del generated[:need]
    return pool
