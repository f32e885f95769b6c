"""Labelled prompts for training and evaluating the task classifier, written by the project.

No external data set holds prompts for all eight tasks of the vocabulary, and the shared traces
hold numbers only, so the examples are generated: per task, templates with slots that are
filled at random (numbers, names, domains, formulas, matrices, mazes, code, phrasing, with or
without answer-format instructions), wrapped now and then in greetings and sign-offs shared by
every task (so they carry no signal), plus the simulator's own prompts (`KINDS`).

Generalizing beyond the templates: besides task-specific templates, every task has
compositional ones (a topic's vocabulary recurs across many combinations) and generic request
frames shared by all tasks ("How do I «ask»?"), so that the frame carries no signal and the
ask's words must. A share of formulas, matrices, mazes, paragraphs and code is drawn long
(thousands of characters), so that the runtime's clipping of long turns is trained and tested.

Honesty of the held-out score: templates are split, not just examples. Each task has
``train`` templates and ``heldout`` templates written with different phrasings; slot pools,
instruction phrasings and option layouts are split too (training sees the first 70 % of each
pool, held-out examples draw from the whole pool), and held-out frames use only frames and asks
training never sees. Simulator prompts are one template per kind, so they cannot be split that
way; they get training seeds and held-out seeds and are reported on their own (``sim/<kind>``).

Slots are written ``«name»`` or ``«name:arg»`` (characters no prompt here uses); a filled slot
may contain slots again. Everything is a pure function of (split, count, seed).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")
_SLOT = re.compile(r"«(\w+)(?::([^»]*))?»")


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled prompt: the user turn's text, its task, and where it came from."""

    text: str
    task: str
    template: str  # "<task>/<split>/<index>" or "sim/<kind>"
    split: Split


def pool(items: list[str] | tuple[str, ...], split: Split) -> list[str] | tuple[str, ...]:
    """The part of a pool a split may use: training sees the first 70 %, held-out everything."""
    return items[: max(1, round(len(items) * 0.7))] if split == "train" else items


def pick(rng: random.Random, items: list[str] | tuple[str, ...], split: Split) -> str:
    return rng.choice(pool(items, split))


# -- slot generators: (rng, split, arg) -> text --------------------------------------------

Slot = Callable[[random.Random, Split, str], str]
#: share of formulas, matrices, mazes, paragraphs and snippets drawn long (thousands of characters),
#: so that clipping long turns to their head and tail is trained and evaluated too
LONG = 0.12


def _num(rng: random.Random, split: Split, arg: str) -> str:
    lo, hi = (int(x) for x in (arg or "2-60").split("-"))
    return str(rng.randint(lo, hi))


def _poly(rng: random.Random, split: Split, arg: str) -> str:
    deg = rng.randint(2, 4)
    terms = []
    for p in range(deg, -1, -1):
        c = rng.randint(-9, 9) if p < deg else rng.randint(1, 9)
        if c:
            mono = "" if p == 0 else ("x" if p == 1 else f"x^{p}")
            coef = str(abs(c)) if abs(c) != 1 or p == 0 else ""
            terms.append(("- " if c < 0 else "+ ") + coef + mono)
    return " ".join(terms).lstrip("+ ")


def _expr(rng: random.Random, split: Split, arg: str) -> str:
    parts = [str(rng.randint(2, 99))]
    for _ in range(rng.randint(2, 5)):
        parts.append(rng.choice("+-*/") if not parts[-1].endswith("(") else "")
        parts.append(str(rng.randint(2, 99)))
    text = " ".join(p for p in parts if p)
    return f"({text})" if rng.random() < 0.2 else text


def _options(rng: random.Random, split: Split, arg: str) -> str:
    """Four options in one of the split's layouts: numbers with a unit, or a named pool."""
    if arg.startswith("num"):
        unit = arg[4:]
        base = rng.uniform(0.5, 500)
        vals = rng.sample([0.25, 0.5, 1, 1.5, 2, 3, 4], 4)
        opts = [f"{base * v:.3g} {unit}".strip() for v in vals]
    else:
        opts = rng.sample(list(OPTION_POOLS[arg]), 4)
    layout = pick(rng, OPTION_LAYOUTS, split)
    if layout == "inline":
        return " ".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(opts))
    return "\n".join(layout.format(L="ABCD"[i], l="abcd"[i], o=o) for i, o in enumerate(opts))


def _time(rng: random.Random, split: Split, arg: str) -> str:
    h, m = rng.randint(8, 17), rng.choice((0, 0, 15, 30, 45))
    if rng.random() < 0.25:
        return f"{(h - 1) % 12 + 1}{f':{m:02d}' if m else ''}{'am' if h < 12 else 'pm'}"
    return f"{h}:{m:02d}"


def _busy(rng: random.Random, split: Split, arg: str) -> str:
    out = []
    for name in rng.sample(list(pool(NAMES, split)), rng.randint(2, 4)):
        spans = []
        for _ in range(rng.randint(1, 3)):
            h = rng.randint(8, 16)
            spans.append(f"{h}:{rng.choice(('00', '30'))}-{h + rng.randint(1, 2)}:{rng.choice(('00', '30'))}")
        out.append(f"{name} is {pick(rng, BUSY_WORDS, split)} {', '.join(spans)}")
    return "; ".join(out) + "."


def _people(rng: random.Random, split: Split, arg: str) -> str:
    names = rng.sample(list(pool(NAMES, split)), rng.randint(2, 4))
    return ", ".join(names[:-1]) + " and " + names[-1]


def _cnf(rng: random.Random, split: Split, arg: str) -> str:
    """A random CNF formula in the notation `arg` names."""
    nv, nc = (rng.randint(3, 9), rng.randint(3, 12)) if rng.random() > LONG else (rng.randint(10, 60), rng.randint(20, 200))
    clauses = [[v * rng.choice((1, -1)) for v in rng.sample(range(1, nv + 1), min(nv, rng.randint(2, 3)))]
               for _ in range(nc)]
    if arg == "dimacs":
        return f"p cnf {nv} {nc}\n" + "\n".join(" ".join(map(str, c)) + " 0" for c in clauses)
    if arg == "ints":
        return "[" + ", ".join("[" + ", ".join(map(str, c)) + "]" for c in clauses) + "]"
    style = CNF_STYLES[arg] if arg in CNF_STYLES else rng.choice(list(CNF_STYLES.values()))
    neg, disj, conj, var = style
    def lit(x: int) -> str:
        k = abs(x) - 1
        v = var.format(i=k + 1, a="abcdefghijklmnopqrstuvwxyz"[k % 26] + (str(k // 26) if k >= 26 else ""))
        return neg + v if x < 0 else v
    sep = "\n" if conj == "\n" else f" {conj} "
    return sep.join("(" + f" {disj} ".join(map(lit, c)) + ")" for c in clauses)


def _matrix(rng: random.Random, split: Split, arg: str) -> str:
    n = rng.randint(4, 8) if rng.random() > LONG else rng.randint(10, 25)
    d = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            d[i][j] = d[j][i] = rng.randint(3, 99)
    if rng.random() < 0.3:
        return "[" + ",\n ".join("[" + ", ".join(map(str, r)) + "]" for r in d) + "]"
    return "\n".join(" ".join(f"{v:>3}" for v in r) for r in d)


def _edges(rng: random.Random, split: Split, arg: str) -> str:
    n = rng.randint(4, 6)
    names = rng.sample(list(pool(CITIES, split)), n) if rng.random() < 0.6 else list("ABCDEFG"[:n])
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    return ", ".join(f"{a}-{b}: {rng.randint(4, 120)}" for a, b in pairs)


def _coords(rng: random.Random, split: Split, arg: str) -> str:
    pts = [(rng.randint(0, 50), rng.randint(0, 50)) for _ in range(rng.randint(5, 9))]
    if rng.random() < 0.5:
        return ", ".join(f"{chr(65 + i)}({x}, {y})" for i, (x, y) in enumerate(pts))
    return ", ".join(f"({x}, {y})" for x, y in pts)


def _maze(rng: random.Random, split: Split, arg: str) -> str:
    w, h = (rng.randint(6, 12), rng.randint(5, 9)) if rng.random() > LONG else (rng.randint(20, 50), rng.randint(12, 30))
    wall, free = rng.choice(MAZE_CHARS if split == "train" else MAZE_CHARS + MAZE_CHARS_HELDOUT)
    rows = [[wall if rng.random() < 0.35 else free for _ in range(w)] for _ in range(h)]
    rows[0][0], rows[-1][-1] = "S", "E"
    return "\n".join("".join(r) for r in rows)


def _relations(rng: random.Random, split: Split, arg: str) -> str:
    objs = rng.sample(list(pool(PLACES, split)), rng.randint(3, 5))
    out = []
    for a, b in zip(objs[1:], objs):
        phr = pick(rng, REL_PHRASES, split)
        out.append(phr.format(a=a, b=b, d=rng.choice(DIRECTIONS)))
    return " ".join(s[0].upper() + s[1:] for s in out)


def _paragraph(rng: random.Random, split: Split, arg: str) -> str:
    count = rng.randint(2, 5) if rng.random() > LONG else rng.randint(10, 40)
    return " ".join(_fill(pick(rng, SENTENCES, split), rng, split) for _ in range(count))


def _mc(rng: random.Random, split: Split, arg: str) -> str:
    """A multiple-choice block: the options, then (maybe) an answer-format instruction."""
    return f"\n\n«opts:{arg}»\n\n«sinst»"


def _frame(rng: random.Random, split: Split, arg: str) -> str:
    """A generic request frame shared by every task ("How do I ...?") around one task's ask, so
    that the frame carries no signal and the ask's words must. Held-out examples use only the
    frames and asks training never sees."""
    frames, asks = FRAMES, POOLS[f"ask_{arg}"]
    if split == "heldout":
        frames, asks = frames[len(pool(frames, "train")):], asks[len(pool(asks, "train")):]
    else:
        frames, asks = pool(frames, split), pool(asks, split)
    return rng.choice(frames).replace("«ask»", rng.choice(asks).replace("¶", "\n"))


def _snippet(rng: random.Random, split: Split, arg: str) -> str:
    lang, code = rng.choice(pool(SNIPPETS, split))
    code = _fill(code, rng, split)
    if rng.random() < LONG:  # a whole file pasted: the same language, several functions
        code = "\n\n".join(_fill(c, rng, split) for lg, c in SNIPPETS if lg == lang) * rng.randint(3, 12)
    return f"```{lang}\n{code}\n```" if rng.random() < 0.7 else code


SLOTS: dict[str, Slot] = {
    "n": _num, "poly": _poly, "expr": _expr, "opts": _options, "time": _time, "busy": _busy,
    "people": _people, "cnf": _cnf, "matrix": _matrix, "edges": _edges, "coords": _coords, "maze": _maze,
    "relations": _relations, "paragraph": _paragraph, "snippet": _snippet, "mc": _mc,
    "frame": _frame,
}


def _fill(template: str, rng: random.Random, split: Split) -> str:
    """Expand every «slot» of `template` (repeatedly: a slot's text may hold slots)."""
    def one(m: re.Match[str]) -> str:
        name, arg = m.group(1), m.group(2) or ""
        if name in SLOTS:
            return SLOTS[name](rng, split, arg)
        return pick(rng, POOLS[name], split)

    for _ in range(6):
        if "«" not in template:
            return template
        template = _SLOT.sub(one, template)
    raise ValueError(f"slots left unfilled (nested too deep or malformed): {template[:200]!r}")


def render(template: str, rng: random.Random, split: Split) -> str:
    """One prompt from `template`: slots filled, sometimes wrapped in a greeting or sign-off."""
    text = _fill(template, rng, split)
    if rng.random() < 0.3:
        text = pick(rng, PREFIXES, split) + text
    if rng.random() < 0.25:
        text += pick(rng, SUFFIXES, split)
    if rng.random() < 0.1:
        text = text.lower()
    return text


def examples(split: Split, per_task: int, seed: int = 0, sim_per_kind: int = 0) -> list[Example]:
    """`per_task` generated examples per task from the split's templates, then `sim_per_kind`
    simulator prompts per kind (training seeds for "train", disjoint seeds for "heldout")."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    out: list[Example] = []
    for task, by_split in TEMPLATES.items():
        templates = by_split[split]
        rng = random.Random(f"{seed}:{split}:{task}")
        for i in range(per_task):
            k = i % len(templates) if i < len(templates) else rng.randrange(len(templates))
            out.append(Example(render(templates[k], rng, split), task, f"{task}/{split}/{k}", split))
    out.extend(simulator_examples(split, sim_per_kind, seed))
    return out


#: the simulator kinds the shipped weights were trained and scored on; later kinds (sat, tsp,
#: calendar) are left out so the training set, and the weights' provenance, stay reproducible
TRAINED_SIM_KINDS = ("arithmetic", "multiple_choice")


def simulator_examples(split: Split, per_kind: int, seed: int = 0) -> list[Example]:
    """The simulator's generated prompts, labelled by the task their kind belongs to."""
    from proxy.upstream.simulator.tasks import KINDS, generate

    base = seed * 100_000 + (0 if split == "train" else 1_000_000_000)
    difficulties = (None, "easy", "medium", "hard")
    return [
        Example(generate(kind, base + i, difficulties[i % 4]).prompt, KINDS[kind].task, f"sim/{kind}", split)
        for kind in TRAINED_SIM_KINDS for i in range(per_kind)
    ]


# -- pools ---------------------------------------------------------------------------------


def _p(text: str) -> tuple[str, ...]:
    return tuple(text.split("|"))


NAMES = _p("Alice|Bob|Carol|Dmitri|Emeka|Fatima|Grace|Hiro|Ines|Jamal|Kofi|Lena|Mateo|Nadia|Omar|Priya|Quinn|Rosa|"
           "Sven|Tanvi|Uma|Victor|Wei|Yara|Zoe|Ahmed|Beatriz|Chen|Dara|Elif")
CITIES = _p("Paris|Lisbon|Nairobi|Osaka|Denver|Toronto|Lima|Krakow|Hanoi|Cape Town|Seville|Oslo|Austin|Melbourne|"
            "Tbilisi|Porto|Accra|Montreal")
PLACES = _p("the bank|the post office|the red house|the bakery|the fountain|the old mill|the school|the library|"
            "the train station|the museum|the park entrance|the lighthouse|the café|the hospital|the bus depot|"
            "the clock tower|the pharmacy|the stadium")
DIRECTIONS = _p("north|south|east|west|north-east|north-west|south-east|south-west")
REL_PHRASES = _p("{a} is {d} of {b}.|{a} lies to the {d} of {b}.|{a} is located directly {d} of {b}.|"
                 "Going {d} from {b}, you reach {a}.|{a} can be found {d} of {b}.|{b} is the landmark just {d} of {a}.")
MAZE_CHARS = (("#", "."), ("#", " "), ("1", "0"))
MAZE_CHARS_HELDOUT = (("█", " "), ("X", "o"))
BUSY_WORDS = _p("busy|in meetings|unavailable|booked|blocked")
#: CNF notations: (negation, disjunction, conjunction, variable format)
CNF_STYLES = {
    "logic": ("¬", "∨", "∧", "x{i}"), "ascii": ("~", "v", "^", "x{i}"), "words": ("NOT ", "OR", "AND", "x{i}"),
    "prog": ("!", "||", "&&", "x{i}"), "letters": ("not ", "or", "and", "{a}"), "lines": ("¬", "∨", "\n", "x{i}"),
}
OPTION_LAYOUTS = _p("{L}) {o}|({L}) {o}|{L}. {o}|{L}: {o}|inline|{l}) {o}")
OPTION_POOLS = {
    "organelle": _p("mitochondrion|ribosome|Golgi apparatus|lysosome|smooth endoplasmic reticulum|"
                    "rough endoplasmic reticulum|nucleolus|peroxisome|chloroplast|centrosome"),
    "compound": _p("ethanol|diethyl ether|acetic acid|n-butane|acetone|benzene|methanol|water|propanal|1-propanol|"
                   "toluene|chloroform"),
    "particle": _p("proton|neutron|electron|positron|muon|pion|neutrino|photon|gluon|W boson"),
    "hybrid": _p("sp|sp2|sp3|sp3d|sp3d2|dsp2"),
    "ratio": _p("1/16|3/16|9/16|1/4|3/4|1/2|1/8|1/32|2/3"),
    "statement": _p("The equilibrium shifts toward the products|The equilibrium shifts toward the reactants|"
                    "The equilibrium constant is unchanged|The forward rate constant decreases|"
                    "The reaction becomes spontaneous at all temperatures|The enthalpy change becomes positive|"
                    "The activation energy increases|The entropy of the surroundings increases"),
    "mechanism": _p("SN1|SN2|E1|E2|E1cB|radical substitution"),
    "bond": _p("ionic bonds|polar covalent bonds|metallic bonds|hydrogen bonds|van der Waals forces|"
               "nonpolar covalent bonds"),
}
SNIPPETS = (
    ("python", "def «ident»(«ident»):\n    result = []\n    for i in range(len(«ident»)):\n        if «ident»[i] % 2 == 0:"
               "\n            result.append(«ident»[i] * «n:2-9»)\n    return result"),
    ("javascript", "async function «ident»(url) {\n  const res = await fetch(url);\n  const data = res.json();\n"
                   "  return data.«ident».map(x => x.id);\n}"),
    ("go", "func «ident»(xs []int) int {\n    total := 0\n    for i := 0; i <= len(xs); i++ {\n        total += xs[i]\n"
           "    }\n    return total\n}"),
    ("java", "public int «ident»(List<Integer> xs) {\n    int max = 0;\n    for (Integer x : xs) { if (x > max) max = x; }"
             "\n    return max;\n}"),
    ("cpp", "#include <vector>\nint «ident»(std::vector<int>& v) {\n    int s = 0;\n"
            "    for (size_t i = 0; i <= v.size(); ++i) s += v[i];\n    return s;\n}"),
    ("sql", "SELECT u.name, COUNT(o.id)\nFROM users u LEFT JOIN orders o ON o.user_id = u.id\n"
            "WHERE o.created_at > '2023-01-«n:10-28»'\nGROUP BY u.name;"),
    ("python", "import pandas as pd\ndf = pd.read_csv(\"«ident».csv\")\ndf[\"total\"] = df[\"price\"] * df[\"qty\"]\n"
               "print(df.groupby(\"region\").total.sum())"),
    ("python", "class «ident»Cache:\n    def __init__(self, size=«n»):\n        self.size = size\n        self.data = {}\n\n"
               "    def get(self, key):\n        return self.data[key]"),
    ("rust", "fn longest(a: &str, b: &str) -> &str {\n    if a.len() > b.len() { a } else { b }\n}"),
    ("typescript", "export function «ident»<T>(items: T[], key: keyof T): Record<string, T[]> {\n"
                   "  return items.reduce((acc, item) => {\n    (acc[String(item[key])] ||= []).push(item);\n"
                   "    return acc;\n  }, {} as Record<string, T[]>);\n}"),
    ("c", "char *«ident»(const char *s) {\n    char buf[«n:8-64»];\n    strcpy(buf, s);\n    return buf;\n}"),
    ("ruby", "def «ident»(list)\n  list.each_with_index.map { |x, i| x * i }.select(&:even?)\nend"),
)
SENTENCES = _p(
    "Revenue grew «n:2-40»% year over year to $«n:2-90».«n:1-9» million in the third quarter.|"
    "The city council voted «n:5-9» to «n:1-4» to approve the new bike lanes on Main Street.|"
    "Our team shipped «n:2-9» features this sprint, but the onboarding flow still has bugs.|"
    "Customer satisfaction dropped slightly after the price increase in «month».|"
    "The hiking trail is «n:3-25» kilometres long and climbs about «n:200-1500» metres.|"
    "I wanted to follow up on our conversation last week about the marketing budget.|"
    "The festival runs from «month» «n:1-20» to «n:21-28» and expects around «n:2-50»,000 visitors.|"
    "Unfortunately, the shipment was delayed by «n:2-14» days because of the storm.|"
    "She moved to «city» in «n:1950-2020» and opened a small bookshop near the harbour.|"
    "Please let me know if Thursday still works for you, otherwise we can find another time.|"
    "The report recommends hiring «n:2-12» additional nurses for the night shift.|"
    "Our survey of «n:100-999» readers found that most of them prefer shorter articles.|"
    "The new phone has a «n:5-7».«n:1-9»-inch screen and a battery that lasts about «n:1-3» days.|"
    "Attendance at the museum rose by «n:5-60» percent after the renovation.|"
    "The committee will publish its final recommendations before the end of the year.|"
    "Several residents complained about the noise from the construction site at night.")
PREFIXES = _p("Hi, |Hey! |Quick question: |I need help with this.\n\n|Please help: |Hello there.\n\n|"
              "Can you help me out? |Good morning! |I've been stuck on this for a while.\n|Question:\n")
SUFFIXES = _p(" Thanks!| Thank you.|\n\nBe concise.| Please explain briefly.| Cheers.| Much appreciated!|"
              "\n\nKeep it short please.")
POOLS: dict[str, tuple[str, ...]] = {
    "name": NAMES, "city": CITIES, "place": PLACES, "dir": DIRECTIONS,
    # math
    "minst": ("", "", "", " Put your final answer within \\boxed{}.", " Show your work.",
              " Please reason step by step, and put your final answer within \\boxed{}.", " Give just the final number.",
              " Explain each step.", " Express the answer in simplest form.", " Let's think step by step.",
              " Return your final response as 'Final Answer: \\boxed{<answer>}'.",
              " The answer is an integer between 0 and 999 inclusive."),
    "word": _p("BANANA|MISSISSIPPI|COMBINATORICS|PARALLEL|ALGEBRA|GEOMETRY|ARRANGE|PEPPER"),
    # science
    "sinst": ("", "Answer with the letter only.", "End your reply with 'Answer: X', where X is the correct letter.",
              "Choose the correct option.", "Explain your reasoning, then give the letter.", "Select one answer.",
              "Respond with the single letter of the best choice.",
              "Think step by step and put the letter of your final answer in \\boxed{}."),
    "bio_function": _p("ATP synthesis|protein synthesis|packaging and sorting proteins|breaking down cellular waste|"
                       "lipid synthesis|photosynthesis|detoxifying hydrogen peroxide|ribosome assembly"),
    "acid": _p("acetic acid|formic acid|hydrochloric acid|benzoic acid|hydrofluoric acid|ammonia|sodium hydroxide"),
    "reaction": _p("N2(g) + 3H2(g) ⇌ 2NH3(g), ΔH < 0|2SO2(g) + O2(g) ⇌ 2SO3(g)|CaCO3(s) ⇌ CaO(s) + CO2(g), ΔH > 0|"
                   "H2(g) + I2(g) ⇌ 2HI(g)|N2O4(g) ⇌ 2NO2(g)"),
    "force": _p("the electromagnetic force|the strong nuclear force|the weak interaction"),
    "substrate": _p("tert-butyl bromide|2-bromobutane|methyl iodide|cyclohexanol|1-chloropropane|benzyl chloride"),
    "reagent": _p("sodium ethoxide|aqueous NaOH|potassium tert-butoxide|sodium azide|HBr|water"),
    "solvent": _p("ethanol|DMSO|acetone|water|THF|DMF"),
    "bond_example": _p("sodium chloride crystals|a water molecule|copper wire|DNA base pairs|solid argon|diamond"),
    "isotope": _p("iodine-131|phosphorus-32|carbon-14|cobalt-60|tritium|strontium-90"),
    "molecule": _p("SF6|PCl5|XeF4|BF3|CH4|NH3|CO2|SO2"),
    # code
    "cinst": ("", "", " Include comments.", " Add a docstring and a short usage example.", " Keep it under 30 lines.",
              " Use only the standard library.", " Return the code in a single fenced block.",
              " Handle edge cases and write tests.", " Make it efficient for large inputs.", " No explanations, just code."),
    "lang": _p("Python|JavaScript|TypeScript|Rust|Go|Java|C++|C#|Kotlin|Ruby|Swift|PHP|Scala|Haskell|Elixir|Julia"),
    "code_task": _p("reverses a linked list|checks whether a string is a palindrome|merges two sorted arrays|"
                    "parses a CSV file and returns the average of the third column|debounces a callback|"
                    "returns the n-th Fibonacci number using memoization|validates an email address|"
                    "flattens a nested list|computes the Levenshtein distance between two strings|"
                    "finds the longest increasing subsequence|reads a JSON config file and falls back to defaults|"
                    "rate-limits calls with a token bucket|deduplicates records by id keeping the newest|"
                    "converts a Roman numeral to an integer|serializes a binary tree|"
                    "retries an HTTP request with exponential backoff|groups log lines by hour"),
    "howto": _p("sort a dictionary by value|read a file line by line|remove duplicates from a list|parse JSON|"
                "make an HTTP GET request|format a date as ISO 8601|reverse a string|deep copy an object|"
                "run two tasks concurrently|read environment variables"),
    "error": _p("TypeError: 'NoneType' object is not subscriptable|IndexError: list index out of range|"
                "KeyError: 'user_id'|ModuleNotFoundError: No module named 'requests'|"
                "AttributeError: 'str' object has no attribute 'append'|ValueError: too many values to unpack|"
                "RecursionError: maximum recursion depth exceeded|ZeroDivisionError: division by zero"),
    "traceback": ("Traceback (most recent call last):\n  File \"«file»\", line «n:3-400», in «ident»\n"
                  "    «ident» = «ident»[«ident»]\n«error»",),
    "file": _p("app.py|main.py|utils/io.py|src/server.py|handlers/user.py|scripts/etl.py"),
    "ident": _p("user_id|items|result|config|data|total|row|cache|payload|response|count|node|parse_rows|load"),
    "testfw": _p("pytest|unittest|Jest|JUnit 5|Go's testing package|RSpec|Vitest"),
    "framework": _p("FastAPI|Express|Spring Boot|Django REST framework|Flask|Gin|Axum|Rails|ASP.NET Core"),
    "endpoint_task": _p("creates a user and returns 201|lists orders with pagination|uploads a file to S3|"
                        "reports the health of the service|deletes an item by id after checking authorization"),
    "sql_task": _p("the top 5 customers by total spend|monthly revenue for 2023|users who never placed an order|"
                   "the second highest salary per department|duplicate email addresses"),
    "table": _p("users|orders|customers|payments|employees|products|invoices"),
    "shell_task": _p("renames all .jpeg files in a directory to .jpg|"
                     "backs up a Postgres database every night and keeps 7 copies|"
                     "finds the 10 largest files under /var|tails a log file and alerts on ERROR lines|"
                     "checks whether a port is open on a list of hosts"),
    "regex": _p(r"^[\w.+-]+@[\w-]+\.[\w.]+$|(\d{3})-(\d{3})-(\d{4})|^(?=.*[A-Z])(?=.*\d).{8,}$|\b[A-Z]{2,}\b|"
                r"<([a-z]+)[^>]*>(.*?)</\1>"),
    "algo": _p("Dijkstra's shortest path algorithm|a DPLL SAT solver|"
               "the 2-opt heuristic for the travelling salesman problem|A* search on a grid maze|"
               "a trie with prefix search|quicksort|union-find with path compression|an LRU cache|topological sort|"
               "an interval scheduler that detects overlapping meetings|a binary search tree with deletion|"
               "merge sort|a sliding-window rate limiter|Kruskal's minimum spanning tree"),
    # planning
    "dur": _p("15|20|30|45|60|90|120"),
    "day": _p("Monday|Tuesday|Wednesday|Thursday|Friday|next Tuesday|tomorrow|March «n:1-28»|Saturday"),
    "tz": _p("New York (UTC-5)|London (UTC+0)|Berlin (UTC+1)|Tokyo (UTC+9)|Bangalore (UTC+5:30)|"
             "San Francisco (UTC-8)|Sydney (UTC+10)|São Paulo (UTC-3)"),
    "tasklist": ("«chore» («n:1-5»h, due «day»), «chore» («n:1-5»h, due «day»), «chore» («n:1-5»h, due «day») and "
                 "«chore» («n:1-5»h, due «day»)",),
    "chore": _p("write the report|prepare slides|review the budget|call the supplier|update the website|"
                "file expenses|draft the proposal|clean the garage"),
    "events": ("«evt» at «time», «evt» at «time» and «evt» from «time» to «time»",),
    "evt": _p("standup|lunch with «name»|a dentist appointment|a 1:1 with my manager|school pickup|a client call|"
              "the team retro|yoga class"),
    "rooms": ("Room A is free «time»-«time», Room B is free «time»-«time», Room C is free after «time»",),
    "requests": ("«evt» («dur» min), «evt» («dur» min), «evt» («dur» min) and «evt» («dur» min)",),
    "courses": _p("Math 101, Physics 201, Chemistry 110 and Biology 150|Art, Music, History, French and Latin|"
                  "CS1, CS2, Databases, Networks and Compilers"),
    "deps": ("A («n:1-6» days), B («n:1-6» days, after A), C («n:1-6» days, after A), D («n:1-6» days, after B and C)",),
    # spatial
    "maze_legend": _p("# = wall, . = open|walls are #, open cells are dots|S is the start, E the exit, # marks walls"),
    "square": _p("e4|b1|g7|d5|a8|h3"),
    # chat
    "email_purpose": _p("asking to move our call to next week|thanking them for the interview|"
                        "following up on an unpaid invoice|introducing myself as the new project manager|"
                        "apologizing for missing the deadline|requesting a day off on Friday"),
    "topic": _p("cats|programmers|coffee|the ocean|autumn|airports|my grandmother|mondays|space travel|pizza"),
    "country": _p("France|Kenya|Peru|Japan|Canada|Australia|Norway|Vietnam|Morocco|Chile"),
    "phrase": _p("Where is the nearest train station?|I would like a table for two, please.|Happy birthday!|"
                 "How much does this cost?|Thank you for your help."),
    "natlang": _p("French|Spanish|German|Japanese|Italian|Portuguese|Swahili|Korean"),
    "feeling": _p("anxious|overwhelmed|excited|stuck|unmotivated|nervous"),
    "situation": _p("starting a new job|moving to another city|my thesis defense|a fight with my best friend|"
                    "public speaking|going back to school"),
    "dish": _p("vegetarian lasagna|banana bread|chicken curry|pad thai|a quick tomato soup|pancakes"),
    "genre": _p("sci-fi|mystery|fantasy|historical fiction|non-fiction|romance"),
    "book": _p("Dune|The Name of the Wind|Gone Girl|Sapiens|Pride and Prejudice|The Martian"),
    "choice": _p("renting vs buying a house|working from home|electric cars|learning Spanish vs French|"
                 "a gap year|freelancing"),
    "announcement": _p("my new job|our product launch|a promotion|my graduation|the opening of our new office"),
    "figure": _p("Ada Lovelace|Genghis Khan|Marie Curie|Nelson Mandela|Cleopatra|Leonardo da Vinci"),
    "concept": _p("inflation|the stock market|how vaccines work|blockchain|why the sky is blue|compound interest"),
    "month": _p("January|April|June|August|October|December"),
    "job": _p("marketing coordinator|junior data analyst|nurse|barista|product designer|teacher"),
    "business": _p("coffee shop|dog grooming business|bakery|podcast|bookshop|yoga studio"),
    "movie": _p("Inception|Amélie|The Godfather|Spirited Away|Parasite|Mad Max: Fury Road"),
    "relation": _p("sister|best friend|dad|colleague|brother|grandmother"),
    "pet": _p("golden retriever|black cat|hamster|parrot|turtle"),
    "invitation": _p("a wedding invitation|an offer to speak at a conference|a dinner party|a job offer"),
    "ingredients": _p("eggs, spinach and some feta|rice, chickpeas and a can of tomatoes|pasta and mushrooms|"
                      "potatoes, leeks and cream"),
    "hobby": _p("gardening|board games|hiking|photography|baking|jazz"),
    "product": _p("a bamboo toothbrush|noise-cancelling headphones|a handmade leather wallet|an ergonomic chair"),
    "etiquette": _p("leave a party without saying goodbye|bring wine to a dinner|text instead of calling|"
                    "recline my seat on a plane"),
}

FRAMES = _p("How do I «ask»?|Can you help me «ask»?|I need to «ask».|Please «ask».|What's the best way to «ask»?|"
            "Could you «ask»?|Help me «ask».|I'm trying to «ask». Any ideas?|Is it possible to «ask»?|"
            "Explain how to «ask».|Show me how to «ask».|I want to «ask» - where do I start?|Any chance you could «ask»?|"
            "I'd like you to «ask».|Would you mind helping me «ask»?")
POOLS.update({
    "compound_free": OPTION_POOLS["compound"], "busy_word": BUSY_WORDS,
    "mq": _p("Find|Compute|Determine|Evaluate|Calculate|Work out|Give|Figure out"),
    "bio_molecule": _p("pepsin|tRNA|DNA ligase|hemoglobin|helicase|the sodium-potassium pump|mRNA|insulin"),
    "element_in_compound": _p("Mn in KMnO4|Cr in K2Cr2O7|S in H2SO4|N in HNO3|Fe in Fe2O3|Cl in HClO4|P in H3PO4"),
    "ion": _p("Fe3+|Cu2+|Mn2+|Co2+|Ni2+|Cr3+|Zn2+"),
    "pigment": _p("chlorophyll a|beta-carotene|phycocyanin|rhodopsin"),
    "tissue": _p("cartilage|the liver|cardiac muscle|bone marrow|the cerebral cortex"),
    "protein": _p("p53|RNA polymerase II|a kinesin motor|cytochrome c|an aquaporin|topoisomerase II"),
    "cell_line": _p("HeLa|HEK293|CHO|yeast"),
    "compartment": _p("the nucleus|the mitochondrial matrix|the plasma membrane|the ER lumen|the cytosol"),
    "atom": _p("carbon|oxygen|nitrogen|sodium|titanium|iron"),
    "code_expr": _p("x ??= y|list(zip(*m))|s[::-1]|Array.from(new Set(a))|std::move(v)|defer f.Close()|yield from gen()|"
                    "a?.b?.c|#[derive(Clone)]|@functools.lru_cache"),
    "regex_target": _p("US phone numbers|ISO dates like 2024-01-31|hex colour codes|IPv4 addresses|"
                       "words that start with a capital letter|URLs with a query string"),
    "http_error": _p("500 Internal Server Error|a CORS error|404 Not Found|422 Unprocessable Entity|a 401"),
    "action": _p("submit the form|call the API from React|upload a large file|log in with OAuth"),
    "git_task": _p("undo the last commit but keep the changes|squash my last three commits|rename a branch|"
                   "resolve a merge conflict in package-lock.json|remove a file from history"),
    "ui_task": _p("shows a paginated table of users|debounces a search input|renders a modal with a form|"
                  "toggles dark mode|uploads an image with a progress bar"),
    "code_concept": _p("a list and a tuple|an interface and an abstract class|a process and a thread|let and const|"
                       "a pointer and a reference|== and ===|a struct and a class|async and threads"),
    "decor_task": _p("times a function|caches results for 60 seconds|retries on exceptions|logs the arguments|"
                     "checks that the user is logged in"),
    "compile_error": _p("error[E0502]: cannot borrow `v` as mutable because it is also borrowed as immutable|"
                        "error: expected ';' before '}' token|TS2322: Type 'string' is not assignable to type 'number'.|"
                        "undefined: strings.Builderr|error: cannot find symbol: method getName()"),
    "plan_verb": _p("Schedule|Book|Set up|Arrange|Find a slot for|Organize|Pencil in|Line up"),
    "meeting": _p("meeting|call|sync|review|1:1|workshop|planning session|catch-up|interview|demo"),
    "dayphrase": _p("on «day»|this week|before «day»|on «day» afternoon|next week|on «day» morning"),
    "availability": ("«name»: «time»-«time»; «name»: «time»-«time»; «name»: «time»-«time»",),
    "vars": ("x1, x2, ..., x«n:3-9»",),
    "cities_list": ("«city», «city», «city» and «city»",),
    "robj": _p("the lamp|the sofa|the table|the plant|the bookshelf|the TV|the rug|the desk|the chair|the piano"),
    "relpos": _p("to the left of|to the right of|behind|in front of|above|below|next to|diagonally across from"),
    "room_relations": ("«robj» is «relpos» «robj». «robj» is «relpos» «robj». «robj» is «relpos» «robj».",),
    "gift_reason": _p("the birthday present|helping me move|hosting us last weekend|the lovely dinner"),
    "diet": _p("vegetarian|keto|Mediterranean|budget|high-protein"),
    "game": _p("cricket|chess|poker|mahjong|rugby|bridge"),
    "lib": _p("requests|numpy|lodash|serde|gorilla/mux|Jackson|Boost|pandas|axios|tokio"),
    "fn": _p("sin(x)|x^2 e^x|ln(x)|cos(2x)|1/x|sqrt(x)|x^3 - 2x|tan(x)|e^(-x^2)|x ln x"),
    "code_bug": _p("useEffect infinite loop|memory leak|CORS error|null pointer exception|race condition|"
                   "segfault|import error|timeout on startup|N+1 queries|deadlock"),
    "chat_pair": _p("a latte and a cappuccino|weather and climate|a crocodile and an alligator|"
                    "a hurricane and a typhoon|baking soda and baking powder|a violin and a viola"),
    "award": _p("the Nobel Peace Prize|the Oscar for best picture|the Tour de France|Wimbledon|the Booker Prize"),
})
OPTION_POOLS.update({
    "bio_statement": _p("It catalyzes the hydrolysis of peptide bonds|It carries amino acids to the ribosome|"
                        "It stores genetic information|It transports oxygen in the blood|It unwinds the DNA double helix|"
                        "It joins Okazaki fragments|It pumps sodium out of the cell|It lowers blood glucose"),
    "quantity": _p("kinetic energy and momentum|momentum only|kinetic energy only|neither momentum nor kinetic energy|"
                   "angular momentum only"),
    "oxstate": _p("+1|+2|+3|+4|+5|+6|+7|-2|-1|0"),
    "count": _p("0|1|2|3|4|5|6"),
    "process": _p("glycolysis|the Krebs cycle|oxidative phosphorylation|fermentation|the Calvin cycle|beta oxidation"),
    "gas": _p("carbon dioxide|methane|nitrous oxide|water vapour|nitrogen|ozone|argon"),
    "maxwell": _p("Gauss's law for magnetism|Faraday's law|the Ampère-Maxwell law|Gauss's law"),
    "cell": _p("neurons|osteoclasts|hepatocytes|erythrocytes|chondrocytes|cardiomyocytes"),
    "term": _p("³P₀|¹S₀|²S₁/₂|⁴S₃/₂|³F₂|⁵D₄"),
    "acid": POOLS["acid"],
})


def _block(text: str) -> tuple[str, ...]:
    """One template per line; ¶ is a line break inside a template; lines starting with # are comments."""
    return tuple(line.strip().replace("¶", "\n") for line in text.strip().splitlines()
                 if line.strip() and not line.strip().startswith("#"))


# -- templates: per task, the phrasings training sees and the ones only evaluation sees ------
# (long lines: one template per line reads better than wrapped fragments)

_TEMPLATES: dict[str, dict[Split, tuple[str, ...]]] = {
    "math": {"train": _block(r"""
Find all real solutions of «poly» = 0.«minst»
Solve for x: «n»x + «n» = «n»x - «n».«minst»
What is the remainder when «n»^{«n:100-2025»} is divided by «n:7-1000»?«minst»
How many positive integers less than «n:100-5000» are divisible by «n:2-12» but not by «n:2-12»?«minst»
Let $f(x) = «poly»$. Compute $f(«n:2-9»)$.«minst»
A bag contains «n:2-15» red marbles and «n:2-15» blue marbles. Two marbles are drawn at random without replacement. The probability that both are red is m/n in lowest terms. Find m + n.«minst»
In triangle $ABC$, $AB = «n:5-30»$, $BC = «n:5-30»$ and $CA = «n:5-30»$. Find the area of the triangle.«minst»
Evaluate $\int_0^{«n:1-9»} («poly»)\,dx$.«minst»
Compute «expr».«minst»
«name» has «n» apples. She buys «n:2-9» bags with «n:3-12» apples in each and gives «n» apples to her friends. How many apples does she have now?«minst»
Find the number of ordered pairs $(a,b)$ of positive integers with $a + b = «n:100-999»$ and $\gcd(a,b) = «n:2-9»$.«minst»
Prove that for every positive integer $n$, the number $«n:2-9»^{n} - 1$ is divisible by «n:2-9».
What is the sum of the first «n:10-500» positive odd integers?«minst»
Find the least positive integer $n$ such that $n!$ is divisible by «n:100-10000».«minst»
A sequence satisfies $a_1 = «n:1-9»$ and $a_{k+1} = «n:2-5»a_k + «n:1-9»$. Find the remainder when $a_{«n:10-99»}$ is divided by 1000.«minst»
Simplify $\frac{«n»}{«n»} + \frac{«n»}{«n»} \cdot «n:2-9»$.«minst»
What is «n:10-999» times «n:10-999»?
Let $x$ and $y$ be real numbers with $x + y = «n»$ and $xy = «n»$. Find $x^3 + y^3$.«minst»
Find the derivative of $f(x) = «poly»$ and the points where it vanishes.«minst»
How many ways can «n:4-9» people sit around a round table if two of them refuse to sit next to each other?«minst»
Determine all integers $n$ such that $n^2 + «n:1-30»n + «n:1-50»$ is a perfect square.«minst»
whats «n:2-99»% of «n:10-2000»?
«mq» $\lim_{x \to 0} \frac{\sin(«n:2-9»x)}{x}$.«minst»
How many subsets of $\{1, 2, \ldots, «n:5-20»\}$ contain no two consecutive integers?«minst»
A fair die is rolled «n:2-6» times. What is the probability that the sum of the results is «n:5-30»?«minst»
The sum of three consecutive even integers is «n:30-300». What is the largest of them?«minst»
«mq» the greatest common divisor of «n:100-9999» and «n:100-9999».«minst»
A circle is inscribed in a square of side «n:2-40». What is the area of the region inside the square but outside the circle?«minst»
Solve the system «n»x + «n»y = «n» and «n»x - «n»y = «n».«minst»
A train travels «n:60-600» miles in «n:2-9» hours. At the same rate, how long does it take to travel «n:60-900» miles?«minst»
«mq» the sum of all positive divisors of «n:100-999».«minst»
How many trailing zeros does «n:20-500»! have?«minst»
Compute the determinant of the matrix [[«n:0-9», «n:0-9»], [«n:0-9», «n:0-9»]].«minst»
Let $a, b, c$ be positive reals with $a + b + c = «n:1-9»$. Find the maximum value of $ab + bc + ca$.«minst»
An arithmetic sequence starts «n:1-9», «n:10-19», ... with a constant difference. What is its «n:20-200»th term?«minst»
In how many ways can a committee of «n:2-5» be chosen from «n:6-20» people if two particular people refuse to serve together?«minst»
Find $x$ if $\sqrt{x + «n»} = x - «n:1-9»$.«minst»
d/dx of «poly»?
Is «n:100-9999» prime? Justify.
A store sells pens at $«n:1-9» each and notebooks at $«n:2-15» each. «name» spends $«n:20-200» on «n:5-30» items. How many notebooks did she buy?«minst»
If «n:2-9» workers build a wall in «n:2-20» days, how long would «n:2-20» workers take?«minst»
What is the median of «n», «n», «n», «n», «n», «n» and «n»?
Convert «n:10-999» from base 10 to base «n:2-9».«minst»
«mq» the «math_quantity» of «math_object».«minst»
What is the «math_quantity» of «math_object»?«minst»
derivative of «fn»?
integral of «fn» dx
what is «n»% of «n:10-999»
solve «n»x + «n» = «n»
lcm of «n» and «n»?
«expr»
factor «poly»
limit of «fn»/x as x → 0
"""), "heldout": _block(r"""
A rectangle has perimeter «n:20-200» and area «n:20-500». What is the length of its diagonal?«minst»
In how many ways can the letters of «word» be arranged so that no two vowels are adjacent?«minst»
If $\log_{«n:2-9»} x + \log_{«n:2-9»} x^2 = «n:2-12»$, what is $x$?«minst»
Count the lattice points strictly inside the circle $x^2 + y^2 = «n:10-400»$.«minst»
«name» drives «n» km at «n:30-120» km/h and then «n» km at «n:30-120» km/h. What is her average speed over the whole trip?«minst»
What is the coefficient of $x^{«n:2-9»}$ when $(1 + «n:2-9»x)^{«n:10-20»}$ is expanded?«minst»
quick one: «expr» = ?
Show that the equation $x^2 - «n:2-30»y^2 = 1$ has infinitely many integer solutions.
What is the units digit of «n:2-99»^{«n:100-999»}?«minst»
Two numbers have a product of «n:100-999» and a sum of «n:20-90». What is the sum of their reciprocals?«minst»
Problem «n:1-15». Let $N$ be the number of positive integers $n \le «n:1000-9999»$ such that $n^2 + 1$ is divisible by «n:5-13». Find $N \bmod 1000$.
antiderivative of «fn»?
gcd(«n:10-999», «n:10-999») = ?
""")},
    "science": {"train": _block(r"""
Which organelle is mainly responsible for «bio_function»?«mc:organelle»
A «n:1-20» kg block slides down a frictionless incline of «n:10-60» degrees. What is its acceleration along the incline?«mc:num m/s^2»
What is the pH of a 0.«n:1-9» M solution of «acid»?«mc:num»
Which of the following compounds has the highest boiling point?«mc:compound»
A photon has a wavelength of «n:100-900» nm. What is its energy?«mc:num eV»
In a dihybrid cross AaBb x AaBb with independent assortment, what fraction of the offspring is expected to show both recessive phenotypes?«mc:ratio»
Consider the reaction «reaction» at equilibrium. Which statement is correct if the temperature is raised?«mc:statement»
An electron is accelerated from rest through a potential difference of «n:10-5000» V. What is its de Broglie wavelength?«mc:num pm»
A star shows a parallax of 0.0«n:10-99» arcseconds. How far away is it?«mc:num parsecs»
Which particle mediates «force»?«mc:particle»
What is the dominant mechanism when «substrate» reacts with «reagent» in «solvent»?«mc:mechanism»
A gas at «n:200-400» K and «n:1-9» atm occupies «n:1-50» L. What volume does it occupy at «n:200-400» K and «n:1-9» atm?«mc:num L»
Which type of interaction holds «bond_example» together?«mc:bond»
A «n:1-50» μF capacitor is charged to «n:5-400» V. How much energy does it store?«mc:num mJ»
The half-life of «isotope» is «n:2-30» days. What fraction of a sample remains after «n:10-120» days?«mc:ratio»
Calculate the equilibrium constant at «n:280-400» K for a reaction with ΔG° = -«n:5-60» kJ/mol.
Which of the following best describes the function of «bio_molecule»?«mc:bio_statement»
Which quantity is conserved in a perfectly elastic collision between two carts?«mc:quantity»
What is the oxidation state of «element_in_compound»?«mc:oxstate»
How many unpaired electrons does «ion» have in its ground state?«mc:count»
A «n:1-9».«n:0-9» kg mass hangs from a spring with constant «n:10-500» N/m. What is the period of oscillation?«mc:num s»
Which process yields the most ATP per molecule of glucose?«mc:process»
Which of these is NOT a greenhouse gas?«mc:gas»
Which of Maxwell's equations implies that magnetic monopoles do not exist?«mc:maxwell»
The rate law of a reaction is rate = k[A]^2[B]. If [A] is doubled and [B] is halved, by what factor does the rate change?«mc:ratio»
Which of the following cell types would NOT be found in «tissue»?«mc:cell»
A «n:2-50» g sample of water at «n:10-40» °C absorbs «n:100-5000» J of heat. What is its final temperature?«mc:num °C»
A researcher transfects «cell_line» cells with a plasmid encoding «protein» fused to GFP and sees fluorescence in «compartment». Which statement best explains this?«mc:bio_statement»
How many distinct signals are expected in the 1H NMR spectrum of «compound_free»?«mc:count»
What is the ground-state term symbol of «atom»?«mc:term»
Derive the escape velocity from a planet of mass «n:2-9»×10^24 kg and radius «n:2-9»,000 km.
Using Hess's law and standard enthalpies of formation, calculate ΔH for the combustion of «compound_free».
Calculate the wavelength of the light emitted when an electron in a hydrogen atom falls from n = «n:3-7» to n = 2.
What is the molar mass of «molecule»? Show the calculation.
Explain why the boiling point of «compound_free» is higher than that of «compound_free».
A «n:1-9» kg object is dropped from «n:5-100» m. What is its speed just before impact, ignoring air resistance?
How does «bio_molecule» lower the activation energy of the reaction it catalyses?
Balance the redox reaction between permanganate and iron(II) in acidic solution.
What is the magnetic field at the centre of a circular loop of radius «n:1-20» cm carrying «n:1-9» A?
Determine the limiting reagent when «n:2-30» g of hydrogen reacts with «n:2-90» g of oxygen to form water.
In a population in Hardy-Weinberg equilibrium, «n:1-49»% of individuals show the recessive phenotype. What is the frequency of heterozygotes?
Which intermolecular forces are present in «compound_free»? Explain.
Compute the Schwarzschild radius of a star of «n:2-30» solar masses.
«sci_verb» the «sci_quantity» of «sci_system».
«sci_verb» the «sci_quantity» of «sci_system».«mc:num»
How would the «sci_quantity» of «sci_system» change if the temperature doubled?
pH of 0.«n:1-9» M «acid»?
energy of a «n:100-900» nm photon?
hybridization of «molecule»?
which organelle does «bio_function»?
mechanism for «substrate» + «reagent»?
«sci_quantity» of «sci_system»?
"""), "heldout": _block(r"""
Identify the major product when «substrate» is treated with «reagent» in «solvent».«mc:compound»
What is the hybridization of the central atom in «molecule»?«mc:hybrid»
A spin-1/2 particle is prepared in the state (|↑⟩ + «n:2-5»|↓⟩)/√«n:5-26». What is the probability of measuring spin up along z?«mc:ratio»
A drug blocks «bio_function». Which cellular structure is most directly affected?«mc:organelle»
A ball is thrown straight up at «n:5-40» m/s. How high does it rise (g = 9.8 m/s²)?«mc:num m»
Two point charges of «n:1-9» μC and -«n:1-9» μC are «n:1-50» cm apart. What is the magnitude of the force between them?«mc:num N»
Which particle is emitted in the beta-minus decay of «isotope»?«mc:particle»
Estimate the enthalpy of combustion of «compound_free» from average bond energies.
A mutation inactivates «protein». Which process would be impaired first?«mc:process»
A «n:100-900» kg satellite orbits Earth at an altitude of «n:200-2000» km. What is its orbital period?«mc:num minutes»
Which of the following is the strongest acid in water?«mc:acid»
oxidation state of «element_in_compound»?
how many unpaired electrons in «ion»?
""")},
    "code": {"train": _block(r"""
Write a «lang» function that «code_task».«cinst»
Why does this code throw «error»?¶«snippet»
Fix the bug in the following code:¶«snippet»
Refactor this to be more idiomatic «lang»:¶«snippet»
Write unit tests with «testfw» for this function:¶«snippet»
How do I «howto» in «lang»?
Write a SQL query that returns «sql_task» from the tables «table»(id, name, created_at) and «table»(id, «table»_id, amount).
Implement «algo» in «lang».«cinst»
Convert this snippet to «lang»:¶«snippet»
I get this error when I run my script:¶«traceback»¶What is wrong?
Write a bash script that «shell_task».
Explain what this regular expression matches: «regex»
What is the time complexity of this function?¶«snippet»
«lang»: «howto» — best way?
Add type hints and docstrings to this code:¶«snippet»
Can you write a «lang» class that «code_task»? It should be thread-safe.
what does `«code_expr»` do?
Write a «lang» script that «shell_task».
Give me a regex that matches «regex_target».
My «framework» app returns «http_error» when I «action». Here is the handler:¶«snippet»
Optimize this query, it takes 30 seconds:¶«snippet»
How can I make this function async?¶«snippet»
Is there a bug in my «algo» implementation?¶«snippet»
Write a «lang» CLI tool that «code_task».
git: how do I «git_task»?
Write a React component that «ui_task».
Explain the difference between «code_concept» in «lang».
Write a Python decorator that «decor_task».
Compile error:¶«compile_error»¶How do I fix it?
Set up pytest fixtures for a «framework» app with a throwaway test database.
Set up a CI pipeline that runs «testfw» tests on every push.
How do I configure «framework» to serve static files?
Why is `«code_expr»` not working in my «lang» code?
Write a pytest fixture that creates a temporary directory with sample files.
What does this «lang» error mean: «compile_error»
Which «lang» library should I use to «howto»?
Add validation for «regex_target» to my signup form in «framework».
«code_verb» a «lang» «code_artifact» that «code_task».«cinst»
In «lang», «code_question»?
How do I install and import «lib» in a «lang» project?
How do I connect «framework» to Postgres and run migrations?
How can I read a large file in «lang» without loading it all into memory?
debug my «framework» «code_bug»
«lang» sort a list of dicts by key
fix my «lang» code please¶«snippet»
regex for «regex_target»
«code_bug» in «framework», help
git undo last commit
«lang» read file into string
"""), "heldout": _block(r"""
Please review this diff and point out anything unsafe:¶«snippet»
Create a REST endpoint in «framework» that «endpoint_task».«cinst»
My «lang» program gets slow for large inputs. How can I speed it up?¶«snippet»
Write a Dockerfile and a GitHub Actions workflow that build and test a «lang» project.
Help me write a «lang» program that «code_task» and prints the result.
There's a memory leak somewhere in here, can you find it?¶«snippet»
Code «algo» from scratch without libraries, in «lang».
Write a GraphQL resolver in «lang» that «endpoint_task».
Why is my unit test flaky? It sometimes fails with «error».¶«snippet»
«framework»: «code_bug»?
why is my «lang» build failing? «compile_error»
""")},
    "planning": {"train": _block(r"""
Schedule a «dur»-minute meeting for «people» on «day». «busy» Everyone is free from «time» to 18:00. What is the earliest slot that works?
Find a «dur»-minute slot between 9:00 and 17:00 on «day» that works for everyone. «busy»
We need a «dur» minute meeting with a «n:5-15»-minute buffer before and after it. «busy» When can we meet?
Find a time for a «dur»-minute call between «tz» and «tz», within working hours (9:00-17:00 local) in both.
I have these tasks: «tasklist». In what order should I do them so that every deadline is met?
Create a weekly on-call rotation for «people» so that nobody is on call two weeks in a row and «name» is off in week «n:2-6».
Plan my «day»: «events». Fit in a «dur»-minute gym session and two hours of focused work.
Book a room for «n:3-20» people for «dur» minutes on «day». Room availability: «rooms».
«people» want to meet for «dur» minutes this week. «busy» Which day and time should I put in the calendar?
Assign shifts for «people» across «n:3-7» days: each day needs two people, nobody works more than «n:2-4» days and «name» cannot work on «day».
When is the earliest «dur»-minute window on «day» that fits everyone's calendar? «busy»
Here are the meeting requests for «day»: «requests». Build a conflict-free schedule for the two rooms.
«plan_verb» a «dur»-minute «meeting» with «people» «dayphrase». «busy»
«name»'s calendar for «day»: «events». Is there a common «dur»-minute gap with «name», who is «busy_word» «time»-«time»?
What's the first time on «day» when «people» are all free for «dur» minutes? Calendars: «busy»
Given these availability windows: «availability». Find a «dur»-minute meeting time for all participants.
Reschedule my «evt» on «day» so it doesn't clash with «evt» at «time».
Build a study timetable for the next «n:3-14» days: «n:2-6» subjects, exams on «day» and «day», at most «n:2-6» hours of study a day.
Assign «n:3-8» talks to «n:2-3» parallel tracks and time slots so that no speaker presents twice at the same time.
Find the earliest «dur»-minute «meeting» slot for «people». Working hours are 9-5. Existing bookings: «busy»
Create a school timetable: «n:2-5» teachers, «n:3-6» classes, «n:4-6» periods a day, and each teacher teaches one class per period.
we need «dur» min w/ «people» before «day». free slots?
«availability». Meeting length: «dur» min, buffer «n:5-15» min. Output the slot.
Put these appointments into my calendar without overlaps: «requests».
Which meeting should I decline to resolve the conflicts in this schedule? «events»
I have to finish «chore» by «day», «chore» by «day» and «chore» by «day». How should I split my week?
Sequence these jobs on one machine to minimize total lateness: «tasklist».
can u find a time for me and «name» «dayphrase»? im «busy_word» «time»-«time»
Block out time on my calendar for «chore» and «chore» before «day» without touching my meetings: «events»
Which time slots on «day» work for a «dur»-minute recurring meeting with «people»? «busy»
Find a «dur»-minute slot «dayphrase» for «people». Constraints: «plan_constraint»; «plan_constraint»; «plan_constraint».
«plan_verb» a «meeting» for «people». «plan_constraint», and «plan_constraint».
schedule a meeting with «people» «dayphrase»
book a «dur» min call with «name» «dayphrase»
find time for a team sync «dayphrase»
when can «name» and «name» meet «dayphrase»?
set up a recurring 1:1 with «name»
move my «time» meeting to «day»
plan the shifts for «people» next week
"""), "heldout": _block(r"""
Can everyone make it? «busy» We need «dur» minutes together on «day», ideally before lunch.
Arrange interviews: «n:2-6» candidates each need 45 minutes with both «name» and «name». «busy» Propose an interview timetable.
Exam timetabling: courses «courses» share students, so no two of them can be in the same slot. There are «n:2-4» slots per day. Give a timetable.
Project tasks with durations and dependencies: «deps». What is the earliest finish time, and when should each task start?
Is there any overlap in «name»'s calendar? «events» If so, move things so that everything fits between 8:00 and 18:00.
My team spans «tz» and «tz». Set up a recurring «dur»-min standup inside office hours for both.
Coordinate a «dur»-minute kickoff across «tz» and «tz» for «people»; nobody should join before 8am or after 7pm local time.
Allocate the meeting rooms for «day» given these bookings: «requests». Which room gets what, and when?
need a «dur»-min slot with «name» «dayphrase», any ideas?
put a «meeting» with «people» on the calendar «dayphrase»
""")},
    "sat": {"train": _block(r"""
Is the following formula satisfiable? «cnf:logic» If it is, give a satisfying assignment.
Find an assignment of true/false values to the variables that satisfies every clause:¶«cnf:lines»
Here is a 3-SAT instance in DIMACS CNF format:¶«cnf:dimacs»¶Answer SAT with a model, or UNSAT.
Determine whether the boolean formula «cnf:words» can be made true.
Each of these clauses needs at least one true literal: «cnf:prog». Give values for all variables.
Solve this SAT problem. Negative numbers mean negated variables: «cnf:ints»
Boolean satisfiability: «cnf:letters». Satisfiable or not? Show a model if so.
Check the satisfiability of the CNF «cnf:ascii» and list a satisfying truth assignment.
Variables: «vars». Constraints: «cnf:words». Is there a satisfying assignment?
Can all of these be true at once? «cnf:letters»
Given the CNF formula F = «cnf:logic», find values of the variables that make F true.
Run DPLL by hand on «cnf:ascii» and report the result.
Here is a propositional formula in conjunctive normal form:¶«cnf:lines»¶Is it satisfiable?
3-SAT: «cnf:prog» — give a model or say UNSAT.
Find a satisfying assignment for the clause set «cnf:ints» (DIMACS-style literals).
Is «cnf:words» a tautology, a contradiction, or satisfiable? Give an assignment if satisfiable.
p cnf instance below, find a solution:¶«cnf:dimacs»
Every clause below must contain a true literal. Which variables should be true?¶«cnf:lines»
Clause list: «cnf:ints». Is there an assignment that satisfies all clauses?
Treat each inner list as an OR of literals and the outer list as an AND: «cnf:ints». Satisfiable?
«cnf:dimacs»¶Is this formula satisfiable? If yes, print the model.
Is this set of clauses consistent? «cnf»
is «cnf:letters» satisfiable?
solve this 3-SAT: «cnf:ints»
satisfying assignment for «cnf:logic»?
"""), "heldout": _block(r"""
Give a truth assignment that makes «cnf» true, or prove that none exists.
Clauses (a list of integer lists, -k means NOT xk): «cnf:ints». Find a model.
«cnf:dimacs»¶solve
Is there a way to set the propositional variables so that all of these hold?¶«cnf:lines»
Decide SAT/UNSAT: «cnf:words»
A circuit outputs 1 exactly when «cnf:words». Which inputs make it output 1?
Find x1..xn satisfying «cnf:logic», or explain why that is impossible.
sat or unsat? «cnf»
""")},
    "tsp": {"train": _block(r"""
Find the shortest tour that visits each of these cities exactly once and returns to the start. Distance matrix:¶«matrix»
A salesman must visit every city once and come back home. Distances: «edges». What is the optimal route and its length?
Given the points «coords», find the minimum-length closed tour through all of them (Euclidean distances).
Travelling salesman problem with the matrix below. Output the tour as a list of node indices starting at 0.¶«matrix»
A delivery van leaves the depot and must stop at every location before returning. Driving times in minutes: «edges». Which order minimizes the total time?
Solve the TSP instance: «edges»
What is the cheapest Hamiltonian cycle in the complete graph with this weight matrix?¶«matrix»
These cities have the following road distances: «edges». Find the shortest route that starts and ends in the same city and visits all the others once.
Shortest Hamiltonian circuit for the distance table:¶«matrix»
I want to visit «cities_list» and return home. Which order minimizes the driving distance? Distances: «edges»
Here are the coordinates of some warehouses: «coords». What tour of minimum total length visits each one once?
Traveling salesperson, weight matrix:¶«matrix»¶Give the optimal tour and its cost.
Find an optimal TSP tour starting at node 0:¶«matrix»
What's the minimum-cost cycle covering all nodes? Costs: «edges»
A courier must pick up parcels at «coords» and come back to the start. Find the shortest closed route.
Use nearest neighbour and then 2-opt to find a good tour for these cities: «edges»
Order the stops to minimize the total distance of a round trip:¶«matrix»
shortest round trip through these cities: «edges»
TSP for «coords»
best order to visit «cities_list» and return home? distances: «edges»
"""), "heldout": _block(r"""
Our technician has to visit all of these sites and come back to the office. Travel costs:¶«matrix»¶What sequence should she use?
Compute an optimal round trip through all vertices given the pairwise distances «edges».
Euclidean TSP: «coords». Return the visiting order and the total length.
Plan the shortest loop for a drone that must fly over each waypoint «coords» once and land where it took off.
A robot arm must drill holes at «coords» and return to its home position. In what order should it drill to minimize travel?
Distance table between offices:¶«matrix»¶Shortest round trip visiting each office once?
cheapest tour: «edges»
""")},
    "spatial": {"train": _block(r"""
Here is a maze («maze_legend»):¶«maze»¶What is the shortest path from S to E? Give it as a sequence of moves (U, D, L, R).
«relations» In which direction is «place» relative to «place»?
A robot on a grid starts at («n:0-9», «n:0-9») facing north. It moves forward «n:1-5», turns right, moves «n:1-5», turns left and moves «n:1-5». Where is it now and which way is it facing?
How many right turns does the shortest route from S to E take in this maze?¶«maze»
You are facing «dir». You turn 90 degrees clockwise twice and then 90 degrees counterclockwise once. Which direction are you facing?
«relations» What is the spatial relationship between «place» and «place»?
In the grid below, walls block movement. Is E reachable from S, and in how many steps?¶«maze»
Consider the map: «relations» Which of these places is furthest «dir»?
On a chessboard, a knight stands on «square». Which squares can it reach in one move?
«relations» Is «place» north or south of «place»?
A grid has obstacles at «coords». What is the shortest path length from the top-left corner to the bottom-right corner moving only up, down, left or right?
If you stand at «place» facing «dir», is «place» on your left or on your right?
Starting at the origin I walk «n:1-9» steps north, «n:1-9» steps east and «n:1-9» steps south. Where am I relative to where I started?
«room_relations» What is directly behind «robj»?
Here's a map:¶«maze»¶How many open cells are adjacent to the start?
Rotate the shape below 90 degrees clockwise and draw the result:¶«maze»
Navigate the maze from S to E:¶«maze»
Imagine you are at «place» facing «place». You turn left. What is in front of you now?
Given this grid map, find a path from S to E that avoids the walls:¶«maze»
«name» sits to the left of «name»; «name» sits opposite «name» at a square table. Who sits to the right of «name»?
A map puts «place» at («n:0-9», «n:0-9») and «place» at («n:0-9», «n:0-9»). Which compass direction leads from the first to the second?
facing «dir», turn left twice - which way now?
I'm facing «dir» and turn right, then right again. Which way am I facing now?
If north is up on the map, which direction is on the left of someone facing «dir»?
A bishop stands on «square». Which squares along its diagonals can it reach?
Point A is at («n:0-9», «n:0-9») and point B is «n:1-9» units north and «n:1-9» units west of A. Where is B?
In a «n:3-9»x«n:3-9» grid, which cells touch the cell in row «n:1-3», column «n:1-3», diagonals included?
Walk «n:1-9» blocks east, «n:1-9» blocks north, then «n:1-9» blocks west. In which direction is the start from you?
«name» stands «n:1-9» metres in front of «name», who faces «name». Who is behind whom?
On this grid of houses:¶«maze»¶which of S and E is closer to the top-right corner?
«relations» «sp_question»
«room_relations» «room_question»
«maze_intro»¶«maze»¶«maze_question»
«turn_seq» Which way are you facing now?
Which cell is directly left of the cell in row «n:1-9», column «n:2-9» of a «n:5-9»x«n:5-9» board?
Five people stand in a row: «name» is left of «name», «name» is at the right end and «name» is in the middle. Who stands second from the left?
Looking north from «place», «place» is ahead and «place» is behind you. What is on your right if «relations»
Place the letters A, B and C on a 3x3 grid so that A is above B and C is to the right of A. Which cells can C occupy?
If the kitchen is east of the hall and the bedroom is north of the kitchen, in which direction is the hall from the bedroom?
which way is left if I face «dir»?
shortest path in this maze?¶«maze»
what's «dir» of «place»? «relations»
knight moves from «square»?
"""), "heldout": _block(r"""
Looking at this floor plan:¶«maze»¶Can you walk from S to E? Count the steps.
«relations» If I walk from «place» toward «place», which direction am I heading?
Picture a 3x3 grid. «place» is in the centre, «place» is directly above it and «place» is to its right. What is diagonally below-left of the centre?
A cube has a red top face and a blue front face. It is rotated 90 degrees to the right around the vertical axis and then tipped forward. Which colour is on top?
maze:¶«maze»¶shortest path length S->E?
«room_relations» Standing where «robj» is, what would be on my left?
Describe the route through this labyrinth from S to E:¶«maze»
if I face «dir» and turn right, where am I facing?
what's «relpos» «robj»? «room_relations»
""")},
    "chat": {"train": _block(r"""
Write an email to «name» «email_purpose».
Summarize this in «n:2-5» bullet points:¶¶«paragraph»
Tell me a joke about «topic».
What's the capital of «country»?
Translate "«phrase»" into «natlang».
I'm feeling «feeling» about «situation». Any advice?
Hi! How are you today?
Give me a recipe for «dish» that serves «n:2-8».
Write a short poem about «topic».
Can you recommend some «genre» books similar to «book»?
What are the pros and cons of «choice»?
Rewrite this paragraph so it sounds more professional:¶«paragraph»
Draft a LinkedIn post announcing «announcement».
Who was «figure» and why are they famous?
Plan a «n:2-7»-day trip to «city» on a budget.
Explain «concept» like I'm five.
good morning :)
What's the weather usually like in «city» in «month»?
Write a cover letter for a «job» position.
Suggest «n:3-10» names for a «business».
Give me a «n:3-7»-day workout plan for a beginner.
What movie should I watch tonight if I liked «movie»?
Reply to this message politely: "«paragraph»"
How do I ask my boss for a raise?
Can you help me write a birthday message for my «relation»?
What are some fun things to do in «city» with kids?
Summarize the plot of «book».
Write a haiku about «topic».
How can I improve my sleep?
What's the difference between a latte and a cappuccino?
Give me «n:3-10» tips for a job interview as a «job».
Write a short story about «topic» in under «n:100-300» words.
Make this sound friendlier: «paragraph»
Who won the World Cup in «n:1970-2022»?
Recommend a podcast about «hobby».
How do I politely tell my neighbour their dog barks too much?
Is «dish» healthy?
What should I pack for a week in «city» in «month»?
Translate this into «natlang»: «paragraph»
Write a thank-you note to my «relation» for «gift_reason».
tell me something interesting
I'm bored
can you speak «natlang»?
Brainstorm «n:3-10» blog post ideas about «hobby».
Help me reply to this email:¶«paragraph»
Create a grocery list for a week of «diet» meals.
Explain the rules of «game».
How many calories are in a banana?
What time zone is «city» in?
Can you summarize our meeting notes?¶«paragraph»
I have a meeting with my manager tomorrow about my performance review. How should I prepare?
What's the difference between «chat_pair»?
Who won «award» in «n:1990-2023»?
hello!
thanks a lot, you're awesome
Write a «n:100-500»-word essay about «topic».
How do I get my toddler to eat vegetables?
Describe «city» in three sentences.
Give me a fun fact about «topic».
«chat_verb» «chat_object».
How do I get a stain out of a white shirt?
How can I be more productive in the mornings?
How do I tell my team I'm leaving the company?
"""), "heldout": _block(r"""
Help me write a toast for my «relation»'s wedding.
What's a good name for a «pet»?
Compose a polite message declining «invitation».
Give me a TL;DR of the following:¶«paragraph»
what should i cook tonight? i have «ingredients»
Proofread this for me: «paragraph»
Could you suggest a gift for my «relation» who loves «hobby»? Budget is $«n:20-200».
Write a product description for «product».
thanks, that's all for now!
Is it rude to «etiquette»?
Write a limerick about «topic».
My «relation» keeps interrupting me at dinner. How do I bring it up kindly?
Summarize the key points of this announcement:¶«paragraph»
""")},
}
# vocabulary pools for the compositional templates: a topic's words recur across many combinations
POOLS.update({
    "math_quantity": _p("sum of the roots|number of positive divisors|area|perimeter|remainder modulo «n:7-1000»|"
                        "expected value|number of real solutions|maximum value|minimum value|greatest common divisor|"
                        "least common multiple|product of the digits|number of lattice points|radius|variance|"
                        "number of distinct prime factors|sum of the digits|limit as n goes to infinity"),
    "math_object": _p("the polynomial «poly»|the integers from 1 to «n:100-999»|"
                      "the triangle with vertices (0, 0), («n:1-20», 0) and (0, «n:1-20»)|the set {1, 2, ..., «n:5-30»}|"
                      "the sequence a_n = «n:2-9»n + «n:1-9»|the equation x^2 + «n:1-20»x + «n:1-50» = 0|"
                      "the number «n:100-99999»|a random permutation of «n:3-9» elements|the circle x^2 + y^2 = «n:10-400»|"
                      "the function f(x) = «poly»|the sum of two fair dice|the numbers «n», «n» and «n»|"
                      "the sequence (1 + 1/n)^n|the roots of «poly»"),
    "sci_verb": _p("Calculate|Determine|Estimate|Find|Derive|What is|Predict"),
    "sci_quantity": _p("molar mass|wavelength|kinetic energy|magnetic field|pH|half-life|boiling point elevation|"
                       "ionization energy|dipole moment|osmotic pressure|equilibrium constant|activation energy|"
                       "momentum|electric potential|entropy change|binding energy per nucleon|resistance|"
                       "resonance frequency|buffer capacity|standard cell potential|heat capacity|escape velocity"),
    "sci_system": _p("a hydrogen atom in the n = «n:2-6» state|«molecule»|a «n:1-20» kg block on a spring|"
                     "a solenoid with «n:100-900» turns|a 0.«n:1-9» M «acid» solution|"
                     "an electron moving at «n:1-9»×10^6 m/s|«n:1-9» L of an ideal gas at «n:200-400» K|"
                     "a galvanic cell with zinc and copper electrodes|a «n:1-50» μF capacitor|the nucleus of «isotope»|"
                     "a copper wire «n:1-9» m long|a population of «n:100-999» fruit flies|a proton in a «n:1-9» T field|"
                     "a neutron star of «n:1-3» solar masses|a diploid cell in metaphase|«n:2-30» g of «compound_free»"),
    "code_verb": _p("Write|Create|Build|Implement|Generate|Draft|Code up|Sketch"),
    "code_artifact": _p("function|class|module|script|command-line tool|microservice|library|unit test|method|"
                        "React hook|middleware|GitHub Action|Lambda handler|migration"),
    "code_question": _p("how do I «howto»|what does «code_expr» mean|why does my loop never end|"
                        "what is the idiomatic way to «howto»|is there a difference between «code_concept»|"
                        "how do I fix «compile_error»|what is the fastest way to «howto»|"
                        "how should I structure a «framework» project|how do I profile memory usage"),
    "plan_constraint": _p("«name» can't meet before «time»|«name» is out of office on «day»|"
                          "«name» needs a «n:10-30»-minute break after lunch|everyone must be done by «time»|"
                          "«name» is «busy_word» «time»-«time»|the room is only free «time»-«time»|"
                          "«name» prefers mornings|no meetings during the «time» all-hands|"
                          "«name» works in «tz»|at least «n:10-30» minutes between meetings"),
    "sp_question": _p("Which direction is «place» from «place»?|Is «place» closer to «place» or to «place»?|"
                      "What lies «dir» of «place»?|Which place is in the middle?|"
                      "If I face «dir» at «place», is «place» ahead of me?|Which two places are furthest apart?|"
                      "Draw the arrangement as a grid.|Which place is the furthest «dir»?"),
    "room_question": _p("What is «relpos» «robj»?|Is «robj» to the left or to the right of «robj»?|"
                        "Which object is furthest to the left?|What is between «robj» and «robj»?|"
                        "Which object is nearest to the door?|Sketch the room from above."),
    "maze_intro": _p("Here is a grid:|Maze below (# are walls):|Consider this map:|Look at the layout:|Grid world:|"
                     "The board looks like this:|Map of the warehouse floor:"),
    "maze_question": _p("How many walls are in the second row?|Which cells are adjacent to S?|"
                        "What is the shortest path from S to E?|Is there a path from S to E that never moves left?|"
                        "How many turns does the shortest path make?|In which corner is E?|"
                        "How many open cells can be reached from S?|Which moves lead from S to E?"),
    "turn_seq": _p("You face «dir», turn left, then turn around.|Facing «dir», you make two right turns.|"
                   "Start facing «dir». Turn 90° left, then 180°, then 90° right.|"
                   "You face «dir» and turn 270 degrees clockwise.|Facing «dir», you turn right three times."),
    "chat_verb": _p("Write|Draft|Give me|Suggest|Recommend|Tell me|Create|Come up with"),
    "chat_object": _p("a birthday card for my «relation»|three ideas for a rainy weekend|a packing list for «city»|"
                      "a short bio for my Instagram|a thank-you note for my teacher|a name for my «pet»|"
                      "something to cheer me up|a polite complaint to my internet provider|"
                      "a bedtime story about «topic»|a slogan for a «business»|a playlist for a road trip|"
                      "a speech for my «relation»'s retirement|a riddle for kids|an apology to my «relation»"),
})
# the asks of the generic frames: verb phrases, one pool per task (70 % train, 30 % held-out only)
POOLS.update({
    "ask_code": _p("reverse a linked list in «lang»|read a CSV file with pandas and drop the empty rows|"
                   "fix this «error» in my «lang» code|write a «lang» function that «code_task»|"
                   "squash my last three git commits|mock an HTTP call in «testfw»|"
                   "set up a «framework» project with a Postgres database|speed up this loop:¶«snippet»|"
                   "debug this:¶«snippet»|serialize a «lang» object to JSON|implement «algo» in «lang»|"
                   "write a regex for «regex_target»|handle «http_error» in my «framework» API|"
                   "parse command-line arguments in «lang»|avoid a race condition between two goroutines|"
                   "paginate the results of a SQL query|make this «lang» code thread-safe:¶«snippet»|"
                   "deploy a «framework» app with Docker|add logging to this function:¶«snippet»|"
                   "write a «lang» unit test for a function that «code_task»"),
    "ask_math": _p("solve «n»x^2 + «n»x - «n» = 0|find the remainder when «n»^{«n:100-999»} is divided by «n:7-99»|"
                   "compute the sum of the first «n:10-500» squares|integrate «poly» from 0 to «n:1-9»|"
                   "prove that √2 is irrational|find the probability of at least one six in «n:2-8» rolls of a die|"
                   "count the «n:3-9»-digit palindromes|factor «poly»|"
                   "find the area of a triangle with sides «n:3-20», «n:3-20» and «n:3-20»|simplify «expr»|"
                   "compute «n:10-99» choose «n:2-9»|find all integer solutions of x^2 - y^2 = «n:10-500»|"
                   "calculate the derivative of «poly»|work out «n:2-99»% of «n:10-5000»|"
                   "find the minimum of «poly» on the interval [0, «n:1-9»]|evaluate the sum 1/1·2 + 1/2·3 + ... + 1/«n:10-99»·«n:11-100»|"
                   "find the inverse of the function f(x) = («n»x + «n»)/(x - «n»)|solve the inequality «n»x - «n» > «n»x + «n»"),
    "ask_science": _p("calculate the pH of a 0.«n:1-9» M «acid» solution|find the energy of a photon of wavelength «n:100-900» nm|"
                      "determine the hybridization of the central atom in «molecule»|"
                      "work out the de Broglie wavelength of an electron accelerated through «n:10-5000» V|"
                      "predict the major product of «substrate» with «reagent» in «solvent»|"
                      "count the unpaired electrons in «ion»|"
                      "explain which way the equilibrium «reaction» shifts when the temperature rises|"
                      "find how much «isotope» is left after «n:10-120» days|"
                      "answer this: which organelle is responsible for «bio_function»?«mc:organelle»|"
                      "pick the right option: what is the oxidation state of «element_in_compound»?«mc:oxstate»|"
                      "compute the orbital period of a satellite «n:200-2000» km above Earth|"
                      "choose the answer: which particle mediates «force»?«mc:particle»|"
                      "solve this GPQA-style question: which interaction holds «bond_example» together?«mc:bond»|"
                      "find the term symbol of the ground state of «atom»"),
    "ask_planning": _p("find a «dur»-minute slot for «people» on «day». «busy»|schedule a weekly standup across «tz» and «tz»|"
                       "book a room for a «dur»-minute «meeting» on «day»: «rooms»|"
                       "fit a «meeting» with «people» into this week. «busy»|set up an on-call rotation for «people»|"
                       "reschedule my «evt» so it does not clash with «evt» at «time»|"
                       "find a common free time: «availability»|plan my «day» around «events»|"
                       "organize interview slots for «n:2-6» candidates with «name» and «name»|"
                       "build a shift schedule for «people» across «n:3-7» days|"
                       "order my tasks so I hit every deadline: «tasklist»|"
                       "find when «people» can all meet for «dur» minutes. «busy»|"
                       "move my meetings on «day» so I get a free «dur»-minute block. «events»|"
                       "timetable «n:3-8» exams in «n:2-4» slots so no student has two at once"),
    "ask_sat": _p("check whether «cnf» is satisfiable|find a satisfying assignment for «cnf:ints»|"
                  "solve this SAT instance:¶«cnf:dimacs»|decide if the clauses «cnf» can all be true|"
                  "find truth values for «vars» that satisfy «cnf»|show that «cnf» is unsatisfiable, or give a model|"
                  "find a model of «cnf:lines»|satisfy every clause of «cnf»"),
    "ask_tsp": _p("find the shortest round trip through «cities_list». Distances: «edges»|"
                  "solve a travelling salesman problem with this matrix:¶«matrix»|"
                  "find the shortest tour through the points «coords»|"
                  "order my delivery stops to minimize the total distance, returning to the depot: «edges»|"
                  "find the minimum-cost Hamiltonian cycle for:¶«matrix»|"
                  "visit each of these customers once and get back home as fast as possible: «edges»|"
                  "find an optimal closed tour over «coords»"),
    "ask_spatial": _p("get from S to E in this maze:¶«maze»|work out which way I face after turning left twice from «dir»|"
                      "work out where «place» is relative to «place». «relations»|count the steps from S to E in:¶«maze»|"
                      "find which squares a knight on «square» attacks|"
                      "tell which direction leads from («n:0-9», «n:0-9») to («n:0-9», «n:0-9») on a map|"
                      "locate «robj» given that «room_relations»|find a way out of this maze:¶«maze»|"
                      "figure out what is «relpos» «robj»: «room_relations»|"
                      "find the compass direction from «place» to «place». «relations»"),
    "ask_chat": _p("write an email to my landlord about a broken heater|cook rice without a rice cooker|ask for a raise|"
                   "politely decline «invitation»|get better sleep|make friends in a new city|"
                   "write a toast for my «relation»|say \"«phrase»\" in «natlang»|summarize this article:¶«paragraph»|"
                   "stop procrastinating|pick a gift for my «relation» who likes «hobby»|respond to this message:¶«paragraph»|"
                   "start journaling|prepare for a first date|write a funny caption for a photo of my «pet»|"
                   "plan a surprise party for my «relation»|get over a breakup|learn «natlang» fast"),
})

# read-only from here on: every task also gets the shared generic frames (twice: they are varied)
TEMPLATES: Mapping[str, Mapping[Split, tuple[str, ...]]] = MappingProxyType({
    task: MappingProxyType({s: (*by_split[s], f"«frame:{task}»", f"«frame:{task}»") for s in SPLITS})
    for task, by_split in _TEMPLATES.items()
})
POOLS = MappingProxyType(POOLS)  # type: ignore[assignment]
OPTION_POOLS = MappingProxyType(OPTION_POOLS)  # type: ignore[assignment]
