"""The sweep's grid: values, points and their folder names, dry-run command lines, and bad values refused before
anything runs, in one line naming the grid key."""
import shlex

import pytest

from mmguard.config.recipe import load_recipe
from mmguard.core.errors import UserError
from mmguard.launch.grid import parse_grid, points, split_values
from mmguard.launch.sweep import sweep_main

RECIPE = """
name: sw
data: {name: synthetic, types: [colour], size: 32}
victims: [{name: lora, model: tiny-llava}]
attacks: [{name: mmguard_bph}]
eval: {zero_shot: false, max_new_tokens: 2}
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "sw.yaml"
    path.write_text(RECIPE)
    return str(path)


def test_values_split_outside_brackets_and_quotes():
    assert split_values("0,0.5,1") == ["0", "0.5", "1"]
    assert split_values("[tiny-llava],[tiny-llava, tiny-qwen2_5_vl]") == ["[tiny-llava]",
                                                                        "[tiny-llava, tiny-qwen2_5_vl]"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]


def test_dry_run_prints_one_run_per_point(recipe, tmp_path, capsys):
    root = tmp_path / "root"
    code = sweep_main([recipe, "victims.0.epochs=2", "--grid", "attacks.0.lambda_bind=0,0.5,1", "--grid",
                       "seed=0,1", "--overlay", "recipes/debug.yaml", "--out", str(root), "--dry-run"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    first = shlex.split(lines[0])
    assert first == ["mmguard", "run", recipe, "victims.0.epochs=2", "attacks.0.lambda_bind=0", "seed=0",
                     "--overlay", "recipes/debug.yaml", "--out", str(root / "lambda_bind-0__seed-0")]
    outs = [shlex.split(line)[-1] for line in lines]
    assert [o.rsplit("/", 1)[-1] for o in outs] == [f"lambda_bind-{v}__seed-{s}" for v in ("0", "0.5", "1")
                                                    for s in (0, 1)]
    assert not root.exists()  # a dry run writes nothing


def test_random_draws_are_distinct_seeded_and_in_grid_order():
    grid = parse_grid(["a.x=1,2,3", "seed=0,1,2,3"])
    drawn = points(grid, draws=5, seed=7)
    assert len({p.name for p in drawn}) == 5
    assert [p.name for p in drawn] == [p.name for p in points(grid, draws=5, seed=7)]
    everything = [p.name for p in points(grid)]
    assert [everything.index(p.name) for p in drawn] == sorted(everything.index(p.name) for p in drawn)
    assert [p.name for p in points(grid, draws=5, seed=8)] != [p.name for p in drawn]
    with pytest.raises(UserError, match="has 12 points"):
        points(grid, draws=13)


def test_names_stay_readable_and_distinct():
    pts = points(parse_grid(["attacks.0.lambda_bind=1", "attacks.1.lambda_bind=2",
                             "attacks.0.surrogates=[tiny-llava],[tiny-llava,tiny-gemma3]"]))
    assert [p.name for p in pts] == [
        "attacks.0.lambda_bind-1__attacks.1.lambda_bind-2__surrogates-tiny-llava",
        "attacks.0.lambda_bind-1__attacks.1.lambda_bind-2__surrogates-tiny-llava+tiny-gemma3"]
    clash = points(parse_grid(["label=a_b,a/b"]))
    assert len({p.name for p in clash}) == 2 and all(p.name.startswith("label-a_b") for p in clash)


@pytest.mark.parametrize("grid, message", [
    (["attacks.0.lambda_bind=0,-1"], "--grid attacks.0.lambda_bind: value '-1': "),
    (["attacks.0.lambda_bnd=0"], "--grid attacks.0.lambda_bnd: value '0': "),
    (["attacks.0.top_k=2,64", "attacks.0.verify_k=4"], "grid point attacks.0.top_k=2 attacks.0.verify_k=4: "),
    (["seed=0,,1"], "--grid seed=0,,1: an empty value"),
    (["seed"], "--grid seed: expected key=v1,v2"),
])
def test_bad_grid_fails_in_one_line_before_anything_runs(recipe, tmp_path, capsys, grid, message):
    args = [recipe, "--out", str(tmp_path / "root")]
    for g in grid:
        args += ["--grid", g]
    assert sweep_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mmguard: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "root").exists()


def test_every_point_resolves_to_its_values(recipe):
    from mmguard.launch.grid import check_points

    pts = points(parse_grid(["attacks.0.lambda_bind=0,0.5", "seed=3"]))
    specs = check_points(recipe, pts, ["victims.0.epochs=2"])
    assert [(s.attacks[0].params["lambda_bind"], s.seed, s.victims[0].finetune.epochs) for s in specs] == [
        (0.0, 3, 2), (0.5, 3, 2)]
    assert specs[0] == load_recipe(recipe, ["victims.0.epochs=2", "attacks.0.lambda_bind=0", "seed=3"])
