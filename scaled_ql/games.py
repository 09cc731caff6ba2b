"""The game registry: names, ALE ROM ids, reference scores and action sets of the Atari games.

Every game a config, a dataset or an evaluation names goes through :func:`get_game`, which
accepts ``"Pong"``, ``"pong"``, ``"ms_pacman"`` or ``"ALE/Pong-v5"`` and fails with the closest
valid name. Human-normalized scores use the random and human reference scores of the
DQN-era papers, exactly as DeepMind's dqn_zoo tabulates them (``dqn_zoo/atari_data.py``).

The action sets are not typed in: they come from ale_py itself (the ROM's minimal action set),
read once per game and cached.

A game *variant* (Farebrother et al., 2018; Scaled QL's online fine-tuning targets) is a game
in another ALE mode and difficulty, named ``<Game>-m<mode>d<difficulty>`` (``Freeway-m1d0``).
Its valid modes and difficulties are read from the ROM (:func:`available_modes`); it keeps the
game's action set and has no reference scores (its raw score is reported, as for Carnival).
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from typing import ClassVar

NUM_ACTIONS_FULL = 18
"""Size of ALE's full action set (every joystick direction x fire button)."""


@dataclass(frozen=True)
class GameSpec:
    """One Atari game: its gymnasium name, ALE ROM id and reference scores."""

    name: str
    """CamelCase name as in ``ALE/<name>-v5``, e.g. ``"MsPacman"``; for a variant the game's
    name with its mode and difficulty, e.g. ``"Freeway-m1d0"``."""
    ale_name: str
    """ale_py ROM id, e.g. ``"ms_pacman"``."""
    random_score: float | None
    """Score of a uniformly random policy (dqn_zoo table); None when unavailable (and for every
    variant: the reference scores were measured in the default mode)."""
    human_score: float | None
    """Score of a professional human game tester (dqn_zoo table); None when unavailable."""
    mode: int | None = None
    """ALE game mode of a variant (``ALEInterface.setMode``); None: the ROM's default mode."""
    difficulty: int | None = None
    """ALE difficulty of a variant (``ALEInterface.setDifficulty``); None: the default."""
    base: str = ""
    """A variant's game (``"Freeway"`` for ``"Freeway-m1d0"``); empty for a game itself."""

    num_actions_full: ClassVar[int] = NUM_ACTIONS_FULL

    @property
    def is_variant(self) -> bool:
        return self.mode is not None

    @property
    def env_id(self) -> str:
        """gymnasium id, e.g. ``"ALE/Pong-v5"`` (a variant's game's id: gymnasium takes the mode
        and difficulty as ``gym.make`` arguments)."""
        return f"ALE/{self.base or self.name}-v5"

    @property
    def has_reference_scores(self) -> bool:
        return self.random_score is not None and self.human_score is not None

    @property
    def action_set(self) -> tuple[int, ...]:
        """The game's minimal action set as ale_py ``Action`` values (read from the ROM)."""
        return _minimal_action_set(self.ale_name)

    @property
    def num_actions(self) -> int:
        """Number of actions in the game's minimal action set."""
        return len(self.action_set)


def _load_rom(ale_name: str):
    import ale_py  # heavy (the emulator and its ROMs): loaded when a game's actions are first asked for
    from ale_py import roms  # (same)

    path = roms.get_rom_path(ale_name)
    if path is None:
        raise RuntimeError(f"game '{ale_name}': ale_py {ale_py.__version__} has no ROM of that name")
    # ale_py's own gymnasium environment sets the same logger mode (errors only).
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.loadROM(str(path))
    return ale


@functools.cache
def _minimal_action_set(ale_name: str) -> tuple[int, ...]:
    return tuple(int(action.value) for action in _load_rom(ale_name).getMinimalActionSet())


@functools.cache
def available_modes(game: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The valid ALE ``(modes, difficulties)`` of ``game`` (a game's name), read from its ROM."""
    ale = _load_rom(get_game(game).ale_name)
    return tuple(int(m) for m in ale.getAvailableModes()), tuple(int(d) for d in ale.getAvailableDifficulties())


# ----------------------------------------------------------------------------------------------
# Reference scores

# (random, human) scores of the Atari-57 games, copied exactly from DeepMind's dqn_zoo,
# https://github.com/google-deepmind/dqn_zoo/blob/master/dqn_zoo/atari_data.py (`_ATARI_DATA`):
# evaluation returns averaged over episodes capped at 108,000 frames, each started after
# 1-30 random no-ops. Keys are ale_py ROM ids.
_ATARI_57_SCORES: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "asteroids": (719.1, 47388.7),
    "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5),
    "berzerk": (123.7, 2630.4),
    "bowling": (23.1, 160.7),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "centipede": (2090.9, 12017.0),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9),
    "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4),
    "enduro": (0.0, 860.5),
    "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4),
    "hero": (1027.0, 30826.4),
    "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6),
    "name_this_game": (2292.3, 8049.0),
    "phoenix": (761.4, 7242.6),
    "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0),
    "robotank": (2.2, 11.9),
    "seaquest": (68.4, 42054.7),
    "skiing": (-17098.1, -4336.9),
    "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7),
    "star_gunner": (664.0, 10250.0),
    "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3),
    "time_pilot": (3568.0, 5229.2),
    "tutankham": (11.4, 167.6),
    "up_n_down": (533.4, 11693.2),
    "venture": (0.0, 1187.5),
    # dqn_zoo notes that under other evaluation methods the random score on Video Pinball
    # is sometimes greater than the human score.
    "video_pinball": (16256.9, 17667.9),
    "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}

# Games of the 46-game Multi-Game DT / Scaled QL set that are not in Atari-57 and so have no
# human score. No score is invented for them: their normalized score is unavailable and
# aggregates say they were left out.
_NO_REFERENCE_GAMES: tuple[str, ...] = ("carnival", "pooyan")


def _camel_case(ale_name: str) -> str:
    """ale_py ROM id -> gymnasium name, as ale_py registers them: ``up_n_down`` -> ``UpNDown``."""
    return "".join(part.capitalize() for part in ale_name.split("_"))


def _build_registry() -> dict[str, GameSpec]:
    specs = [GameSpec(_camel_case(a), a, r, h) for a, (r, h) in _ATARI_57_SCORES.items()]
    specs += [GameSpec(_camel_case(a), a, None, None) for a in _NO_REFERENCE_GAMES]
    return {spec.name: spec for spec in sorted(specs, key=lambda s: s.name)}


GAMES: dict[str, GameSpec] = _build_registry()
"""Every registered game by CamelCase name, alphabetical."""

ATARI_57_GAMES: tuple[str, ...] = tuple(sorted(_camel_case(a) for a in _ATARI_57_SCORES))
"""The 57 games of the Atari-57 benchmark (all have reference scores)."""

# ----------------------------------------------------------------------------------------------
# Game sets of the multi-game offline papers

# Multi-Game Decision Transformer (Lee et al., NeurIPS 2022): 46 games, of which 41 are
# trained on and 5 held out. The 41 are as listed in the paper's appendix and in public code
# that reproduces it (an `ATARI_NAMES_41` list "does not contain: alien, pong, ms-pacman,
# space-invaders, star-gunner").
MULTI_GAME_DT_HELD_OUT_GAMES: tuple[str, ...] = ("Alien", "MsPacman", "Pong", "SpaceInvaders", "StarGunner")
MULTI_GAME_DT_TRAIN_GAMES: tuple[str, ...] = (
    "Amidar", "Assault", "Asterix", "Atlantis", "BankHeist", "BattleZone", "BeamRider",
    "Boxing", "Breakout", "Carnival", "Centipede", "ChopperCommand", "CrazyClimber",
    "DemonAttack", "DoubleDunk", "Enduro", "FishingDerby", "Freeway", "Frostbite", "Gopher",
    "Gravitar", "Hero", "IceHockey", "Jamesbond", "Kangaroo", "Krull", "KungFuMaster",
    "NameThisGame", "Phoenix", "Pooyan", "Qbert", "Riverraid", "RoadRunner", "Robotank",
    "Seaquest", "TimePilot", "UpNDown", "VideoPinball", "WizardOfWor", "YarsRevenge", "Zaxxon",
)  # fmt: skip
MULTI_GAME_DT_GAMES: tuple[str, ...] = tuple(sorted(MULTI_GAME_DT_TRAIN_GAMES + MULTI_GAME_DT_HELD_OUT_GAMES))

# Scaled QL (Kumar et al., ICLR 2023) says it trains on "40 games" taken from Multi-Game DT's
# set and holds out the same five. We could not find a source that names the 40 (nor which
# of the 41 Multi-Game DT training games is left out), so this is the best-sourced list: the
# 41 Multi-Game DT training games. Replace it when the paper's per-game table is at hand.
SCALED_QL_TRAIN_GAMES: tuple[str, ...] = MULTI_GAME_DT_TRAIN_GAMES
SCALED_QL_HELD_OUT_GAMES: tuple[str, ...] = MULTI_GAME_DT_HELD_OUT_GAMES


# ----------------------------------------------------------------------------------------------
# Look-ups


def _key(text: str) -> str:
    """Normalize a user's spelling: ``ALE/Ms_Pacman-v5`` -> ``mspacman``."""
    text = text.strip()
    text = re.sub(r"^ALE/", "", text, flags=re.IGNORECASE)
    text = re.sub(r"-v\d+$", "", text)
    return re.sub(r"[\s_\-]", "", text).lower()


_BY_KEY: dict[str, GameSpec] = {_key(spec.name): spec for spec in GAMES.values()}


_VARIANT = re.compile(r"^(?P<game>.+?)[-_ ]m(?P<mode>\d+)[-_ ]?d(?P<difficulty>\d+)$", re.IGNORECASE)


def variant_name(game: str, mode: int, difficulty: int) -> str:
    """The registry's name of a game variant: ``variant_name("Freeway", 1, 0) == "Freeway-m1d0"``."""
    return f"{get_game(game).name}-m{int(mode)}d{int(difficulty)}"


def get_game(name: str) -> GameSpec:
    """The :class:`GameSpec` of ``name`` ("Pong", "pong", "ms_pacman" or "ALE/Pong-v5"), or of a
    game variant, the game's name followed by ``-m<mode>d<difficulty>`` ("Freeway-m1d0": ALE
    mode 1, difficulty 0). A variant keeps its game's ROM and action set; its mode and
    difficulty are checked against the ROM's available ones; it has no reference scores.

    Raises ``KeyError`` naming the game and suggesting the closest registered name, or naming
    the valid modes and difficulties.
    """
    if not isinstance(name, str):
        raise KeyError(f"game name must be a string, found {name!r} ({type(name).__name__})")
    variant = _VARIANT.match(name.strip())
    if variant is not None and _key(variant["game"]) in _BY_KEY:
        base = _BY_KEY[_key(variant["game"])]
        mode, difficulty = int(variant["mode"]), int(variant["difficulty"])
        modes, difficulties = available_modes(base.name)
        if mode not in modes or difficulty not in difficulties:
            raise KeyError(f"game variant '{name}': {base.name} has modes {list(modes)} and difficulties "
                           f"{list(difficulties)}; found mode {mode}, difficulty {difficulty}")
        return GameSpec(f"{base.name}-m{mode}d{difficulty}", base.ale_name, None, None, mode=mode,
                        difficulty=difficulty, base=base.name)
    spec = _BY_KEY.get(_key(name))
    if spec is not None:
        return spec
    match = difflib.get_close_matches(_key(name), list(_BY_KEY), n=1, cutoff=0.0)
    hint = f" (did you mean '{_BY_KEY[match[0]].name}'?)" if match else ""
    raise KeyError(f"unknown game '{name}'{hint}; known games: {', '.join(GAMES)}")


def human_normalized_score(game: str, score: float) -> float | None:
    """(score - random) / (human - random) with dqn_zoo's reference scores.

    None when the game has no reference scores (Carnival, Pooyan).
    """
    spec = get_game(game)
    if not spec.has_reference_scores:
        return None
    assert spec.random_score is not None and spec.human_score is not None
    return (float(score) - spec.random_score) / (spec.human_score - spec.random_score)
