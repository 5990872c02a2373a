"""The words of a shot, read for its picture: which scene elements they name, which
characters a frame shows, and the time of day.

The elements come from a fixed vocabulary (:data:`VOCABULARY`, documented in
``docs/MEDIA.md``): a time of day and sky, weather, a place, objects. The ambience bed of a
shot (:mod:`sparkle.adapters.ambience`) follows the same words.
"""

from __future__ import annotations

import re

from sparkle.adapters.scene_canvas import rng
from sparkle.schemas import CharacterSpec, MoviePlan, ShotSpec

#: Vocabulary of scene elements: element -> (kind, words that select it). A word matches
#: as a whole word or as the start of one ("raining" matches "rain"); several words may
#: select the same element. Kinds: ``time`` (one per picture), ``weather``, ``place``
#: (the first place found is the main one), ``object``.
VOCABULARY: dict[str, tuple[str, tuple[str, ...]]] = {
    # time of day and sky
    "night": ("time", ("night", "midnight", "moon", "starry", "stars", "dark", "neon")),
    "dusk": ("time", ("dusk", "sunset", "evening", "twilight", "golden hour", "sundown")),
    "dawn": ("time", ("dawn", "sunrise", "daybreak", "morning")),
    "day": ("time", ("day", "noon", "afternoon", "sunny", "sunlit", "bright", "sun")),
    "overcast": ("time", ("overcast", "cloudy", "grey", "gray", "gloomy", "drizzle")),
    # weather
    "rain": ("weather", ("rain", "raining", "rainy", "downpour", "drizzle", "wet")),
    "snow": ("weather", ("snow", "snowy", "snowing", "blizzard", "frost", "winter")),
    "fog": ("weather", ("fog", "foggy", "mist", "misty", "haze", "hazy", "smoke")),
    "storm": ("weather", ("storm", "stormy", "thunder", "lightning", "tempest", "gale")),
    # places
    "sea": (
        "place",
        (
            "sea",
            "ocean",
            "waves",
            "wave",
            "coast",
            "shore",
            "beach",
            "bay",
            "harbor",
            "harbour",
            "cliff",
            "tide",
            "sail",
        ),
    ),
    "lighthouse": ("place", ("lighthouse",)),
    "rooftop": ("place", ("rooftop", "roof", "terrace", "balcony")),
    "city": (
        "place",
        ("city", "skyline", "downtown", "skyscraper", "town", "metropolis", "buildings"),
    ),
    "street": (
        "place",
        ("street", "road", "alley", "avenue", "sidewalk", "crossing", "highway", "parking"),
    ),
    "room": (
        "place",
        (
            "room",
            "interior",
            "inside",
            "indoors",
            "kitchen",
            "bedroom",
            "office",
            "apartment",
            "house",
            "hall",
            "library",
            "studio",
            "bar",
            "cafe",
            "table",
            "desk",
            "attic",
            "cabin",
        ),
    ),
    "forest": (
        "place",
        ("forest", "woods", "wood", "trees", "tree", "jungle", "grove", "park", "garden"),
    ),
    "mountains": (
        "place",
        ("mountain", "mountains", "peak", "peaks", "alps", "hills", "valley", "summit"),
    ),
    "desert": ("place", ("desert", "dunes", "dune", "sand", "sahara", "canyon")),
    "bridge": ("place", ("bridge", "river", "viaduct", "canal")),
    # objects
    "boat": ("object", ("boat", "ship", "sailboat", "yacht", "ferry", "vessel", "sailing")),
    "car": ("object", ("car", "taxi", "cab", "truck", "van", "vehicle", "driving")),
    "lamp": (
        "object",
        (
            "lamp",
            "lantern",
            "streetlight",
            "candle",
            "lens",
            "glow",
            "glowing",
            "beam",
            "light",
            "lights",
        ),
    ),
    "window": ("object", ("window", "windows", "glass", "pane")),
    "neon": ("object", ("neon", "sign", "signs", "billboard")),
}

#: Kinds of place that are drawn indoors.
INDOOR_PLACES = frozenset({"room"})

#: Mood words that decide the time of day when no time word is found: word -> time.
MOOD_TIMES: tuple[tuple[str, str], ...] = (
    ("sad", "overcast"),
    ("lonely", "overcast"),
    ("quiet", "dusk"),
    ("warm", "dusk"),
    ("romantic", "dusk"),
    ("happy", "day"),
    ("cheerful", "day"),
    ("tense", "night"),
    ("scary", "night"),
    ("mysterious", "night"),
    ("calm", "dawn"),
    ("hope", "dawn"),
)

#: Places for a shot whose words name none, by mood: chosen from the seed.
FALLBACK_PLACES = ("mountains", "forest", "city", "sea")

#: Words of a frame prompt meaning the camera is close on a face.
CLOSE_WORDS = ("close-up", "closeup", "close up", "portrait", "face", "in close")

#: Endings a vocabulary word may carry and still match ("raining", "stormy", "towers").
WORD_ENDINGS = r"(?:s|es|ing|ed|y|ly)?"


def _word_re(word: str) -> re.Pattern[str]:
    body = re.escape(word).replace(r"\ ", r"[\s-]+")
    return re.compile(rf"(?<![a-z]){body}{WORD_ENDINGS}(?![a-z])")


_PATTERNS = {element: [_word_re(w) for w in words] for element, (_, words) in VOCABULARY.items()}


def find_elements(text: str) -> list[str]:
    """Vocabulary elements named in ``text``, in the order of the vocabulary."""
    lowered = text.lower()
    return [e for e, patterns in _PATTERNS.items() if any(p.search(lowered) for p in patterns)]


def element_kind(element: str) -> str:
    """The kind of a vocabulary element: ``time``, ``weather``, ``place`` or ``object``."""
    return VOCABULARY[element][0]


def characters_in(plan: MoviePlan, shot: ShotSpec, text: str) -> list[CharacterSpec]:
    """Characters a frame shows: named (by id or a name word) in ``text``, or speaking."""
    lowered = text.lower()
    found: list[CharacterSpec] = []
    for character in plan.characters:
        words = [character.id.lower()] + [
            w for w in re.findall(r"[a-z]+", character.name.lower()) if len(w) >= 3
        ]
        if any(re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", lowered) for w in words):
            found.append(character)
    for line in shot.dialogue:
        character = plan.character(line.character_id)
        if character not in found:
            found.append(character)
    return found


def shot_words(shot: ShotSpec) -> str:
    """Everything a shot says of what is seen: its setting, description and frame prompts."""
    return " ".join([shot.setting or "", shot.visual_description, shot.start_frame_prompt,
                     shot.end_frame_prompt])


def shot_time(plan: MoviePlan, shot: ShotSpec) -> str:
    """Time of day: the shot's words, else the title, earlier shots, mood, the seed."""
    text = shot_words(shot)
    for source in (text, plan.title):
        times = [e for e in find_elements(source) if element_kind(e) == "time"]
        if times:
            return times[0]
    index = next((i for i, s in enumerate(plan.shots) if s.id == shot.id), 0)
    for earlier in reversed(plan.shots[:index]):
        words = shot_words(earlier)
        times = [e for e in find_elements(words) if element_kind(e) == "time"]
        if times:
            return times[0]
    lowered = text.lower()
    for word, time in MOOD_TIMES:
        if word in lowered:
            return time
    if "storm" in find_elements(text):
        return "overcast"
    return rng("time", plan.seed, shot.id).choice(("day", "day", "dusk", "dawn"))
