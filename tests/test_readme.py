"""The README's kernel examples run as written, at smaller sizes."""

import re

import numpy as np

from conftest import ROOT


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Kernels:", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def shrink(code: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert code.count(old) == 1, f"the README example no longer contains {old!r}"
        code = code.replace(old, new)
    return code


def test_readme_has_the_two_kernel_examples():
    assert len(readme_examples()) == 2


def test_readme_sgd_example_runs():
    code = shrink(readme_examples()[0], {"1e-1, 1000)": "1e-1, 16)", "steps=2000,": "steps=40,", "every=100,": "every=20,"})
    scope = {}
    exec(compile(code, "README.md (SGD)", "exec"), scope)
    out = scope["out"]
    assert out.saved.shape == (16, 3, 8)
    np.testing.assert_array_equal(out.steps, [0, 20, 40])
    assert not np.asarray(out.state["diverged"]).any()


def test_readme_dyson_example_runs():
    code = shrink(readme_examples()[1], {"100)": "4)", "steps=3000,": "steps=60,", "every=300,": "every=30,"})
    scope = {}
    exec(compile(code, "README.md (DBM)", "exec"), scope)
    out = scope["out"]
    assert out.observed["levels"].shape == (12, 3, 64)
    assert np.all(np.diff(np.asarray(out.observed["levels"][:, 1:]), axis=-1) > 0)
    np.testing.assert_allclose(scope["time"], [0.0, 0.03, 0.06], rtol=1e-6)
    # from 0, E[Σλ²] grows as 1 − e^{−2γt} of its stationary value (exactly, for U = γλ²/2):
    # within 5 standard errors plus 0.5% for the scheme's first steps from the degenerate start
    relative = np.asarray(scope["relative"])
    se = relative.std(ddof=1) / np.sqrt(relative.size)
    assert abs(relative.mean() + np.exp(-0.12)) < 5 * se + 0.005, (relative.mean(), se)
