"""Model specs, ensemble layers and the ``fitscope models`` command."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from fitscope.errors import ConfigError
from fitscope.models import (
    SPEC_HELP,
    EnsembleLinear,
    ModelSpec,
    build,
    flops_per_example,
    largest_activation,
    parse_spec,
)
from fitscope.models.layers import init_generators

SHAPES = {"vector": (12,), "signal": (2, 16), "image": (1, 8, 8)}
FAMILY_INPUTS = [
    ("mlp:16x2", "vector"),
    ("mlp:16-8", "signal"),
    ("mlp:16x1,dropout=0.5", "image"),
    ("cnn:4-8", "image"),
    ("cnn:4x3,dropout=0.25", "image"),
    ("resnet:4x3", "image"),
    ("resnet:4x2,blocks=2", "image"),
    ("cnn1d:4x3", "signal"),
    ("cnn1d:4-8,kernel=3", "signal"),
]


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "text, family, widths",
    [
        ("mlp:512x2", "mlp", (512, 512)),
        ("mlp:256-128", "mlp", (256, 128)),
        ("mlp:64", "mlp", (64,)),
        ("cnn:32-64", "cnn", (32, 64)),
        ("cnn:32x3", "cnn", (32, 32, 32)),
        ("resnet:16x3", "resnet", (16, 32, 64)),
        ("resnet:16-16-32", "resnet", (16, 16, 32)),
        ("cnn1d:32x3", "cnn1d", (32, 32, 32)),
        (" MLP:512X2 ", "mlp", (512, 512)),
    ],
)
def test_parse_spec_shapes(text, family, widths):
    spec = parse_spec(text)
    assert spec.family == family
    assert spec.widths == widths
    assert spec.dropout == 0.0
    assert parse_spec(str(spec)) == spec  # the canonical form parses back


def test_parse_spec_options():
    assert parse_spec("mlp:512x2,dropout=0.5").dropout == 0.5
    assert parse_spec("cnn:32-64,dropout=0.25").dropout == 0.25
    assert parse_spec("resnet:16x3,blocks=2").blocks == 2
    assert parse_spec("cnn1d:32x3").kernel == 5
    assert parse_spec("cnn1d:32x3,kernel=7").kernel == 7
    spec = parse_spec("resnet:16x3,blocks=2,dropout=0.1")
    assert parse_spec(str(spec)) == spec
    assert parse_spec(spec) is spec


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mlp",
        "mlp:",
        "transformer:32",
        "mlp:abc",
        "mlp:512x0",
        "mlp:0",
        "mlp:512,dropout=1.5",
        "mlp:512,dropout=-0.1",
        "mlp:512,dropout=x",
        "mlp:512,depth=3",
        "mlp:512,dropout",
        "mlp:512,dropout=0.1,dropout=0.2",
        "resnet:16x3,kernel=3",
        "cnn1d:32,kernel=4",
        "resnet:16x3,blocks=1.5",
    ],
)
def test_parse_spec_errors_name_spec_and_grammar(text):
    with pytest.raises(ConfigError) as info:
        parse_spec(text)
    message = str(info.value)
    assert "\n" not in message
    assert repr(text) in message
    assert "mlp:512x2" in message  # the grammar's examples


def test_parse_spec_rejects_non_strings():
    with pytest.raises(ConfigError):
        parse_spec(512)


def test_spec_help_mentions_every_family():
    for family in ("mlp:", "cnn:", "resnet:", "cnn1d:", "dropout="):
        assert family in SPEC_HELP


def test_dropout_override():
    assert build("mlp:8,dropout=0.5", (4,), 3, seeds=[0], dropout=0.0).spec.dropout == 0.0
    assert build("mlp:8", (4,), 3, seeds=[0], dropout=0.3).spec.dropout == 0.3
    assert build("mlp:8,dropout=0.5", (4,), 3, seeds=[0]).spec.dropout == 0.5
    with pytest.raises(ConfigError):
        build("mlp:8", (4,), 3, seeds=[0], dropout=1.0)


@pytest.mark.parametrize(
    "spec, shape, hint",
    [
        ("cnn:8", (1, 40), "cnn1d"),
        ("resnet:8x2", (1, 40), "cnn1d"),
        ("cnn1d:8", (1, 8, 8), "cnn:"),
        ("cnn:8", (64,), "mlp"),
        ("cnn1d:8", (64,), "mlp"),
    ],
)
def test_family_input_mismatch_says_which_spec_fits(spec, shape, hint):
    with pytest.raises(ConfigError) as info:
        build(spec, shape, 10, seeds=[0])
    assert hint in str(info.value)
    assert "\n" not in str(info.value)


def test_build_argument_errors():
    with pytest.raises(ConfigError):
        build("mlp:8", (4,), 3, seeds=[])
    with pytest.raises(ConfigError):
        build("mlp:8", (4,), 0, seeds=[0])
    with pytest.raises(ConfigError):
        build("mlp:8", (4, 4, 4, 4), 3, seeds=[0])
    with pytest.raises(ConfigError):
        build("mlp:8", (4,), 3, seeds=["a"])


# ------------------------------------------------------------------ shapes and per-model identity


@pytest.mark.parametrize("spec, kind", FAMILY_INPUTS)
@pytest.mark.parametrize("k", [1, 3])
def test_output_shapes(spec, kind, k):
    shape = SHAPES[kind]
    model = build(spec, shape, 5, seeds=list(range(k)))
    assert model.n_models == k
    x = torch.randn(k, 6, *shape)
    assert model(x).shape == (k, 6, 5)
    model.eval()
    xs = torch.randn(7, *shape)
    with torch.no_grad():
        shared = model.forward_shared(xs)
        expanded = model(xs.unsqueeze(0).expand(k, *xs.shape))
    assert shared.shape == (k, 7, 5)
    torch.testing.assert_close(shared, expanded, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec, kind", FAMILY_INPUTS)
def test_ensemble_member_equals_single_model(spec, kind):
    shape = SHAPES[kind]
    ensemble = build(spec, shape, 4, seeds=[5, 7, 9])
    single = build(spec, shape, 4, seeds=[7])
    # Same initial weights: model 1's slice of every parameter equals the single model's.
    for (name, p_ens), (_, p_one) in zip(ensemble.named_parameters(), single.named_parameters()):
        rows = p_one.shape[0]
        torch.testing.assert_close(p_ens[rows : 2 * rows], p_one, rtol=0, atol=0, msg=name)
    # Same forward, in train mode (BatchNorm batch statistics, dropout masks) and eval mode.
    x = torch.randn(3, 10, *shape)
    for train in (True, False):
        ensemble.train(train)
        single.train(train)
        with torch.no_grad():
            torch.testing.assert_close(ensemble(x)[1], single(x[1:2])[0], rtol=1e-5, atol=1e-5)


def test_linear_init_is_pytorch_default():
    gens = init_generators([0, 1])
    layer = EnsembleLinear(2, 100, 30, generators=gens)
    bound = 1 / math.sqrt(100)
    assert layer.weight.shape == (2, 100, 30) and layer.bias.shape == (2, 30)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    assert abs(layer.weight.std().item() - bound / math.sqrt(3)) < 0.01 * bound / math.sqrt(3) * 5
    # Drawn exactly as nn.Linear.reset_parameters would with the same generator state.
    g = torch.Generator().manual_seed(int(init_generators([1])[0].initial_seed()))
    ref = torch.nn.Linear(100, 30)
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(ref.weight, a=math.sqrt(5), generator=g)
        torch.nn.init.uniform_(ref.bias, -bound, bound, generator=g)
    torch.testing.assert_close(layer.weight[1], ref.weight.T)
    torch.testing.assert_close(layer.bias[1], ref.bias)


def test_different_seeds_give_different_models():
    model = build("mlp:8", (4,), 3, seeds=[0, 1])
    assert not torch.equal(model.hidden[0].weight[0], model.hidden[0].weight[1])


def test_dropout_masks_are_per_model_and_seeded():
    x = torch.ones(2, 50, 6)
    a = build("mlp:64,dropout=0.5", (6,), 3, seeds=[1, 2])
    b = build("mlp:64,dropout=0.5", (6,), 3, seeds=[2])
    a.train()
    b.train()
    with torch.no_grad():
        out_a, out_b = a(x), b(x[1:])
        torch.testing.assert_close(out_a[1], out_b[0])
        assert not torch.allclose(a(x)[1], out_a[1])  # a fresh mask each call


def test_flops_per_example_by_hand():
    assert flops_per_example("mlp:512x2", (64,), 10) == 2 * (64 * 512 + 512 * 512 + 512 * 10)
    assert flops_per_example("mlp:512x2", (1, 8, 8), 10) == 2 * (64 * 512 + 512 * 512 + 512 * 10)
    # conv 1->8 3x3 on 8x8 (same padding), then global pool and linear 8->10.
    assert flops_per_example("cnn:8", (1, 8, 8), 10) == 2 * (8 * 8 * 8 * 9 + 8 * 10)
    # conv1d 1->4 kernel 5 on 40, pool to 20, conv1d 4->4 on 20, linear 4->3.
    assert flops_per_example("cnn1d:4x2", (1, 40), 3) == 2 * (4 * 40 * 5 + 4 * 20 * 4 * 5 + 4 * 3)
    assert flops_per_example("resnet:4x2", (1, 8, 8), 10) > flops_per_example("resnet:4x1", (1, 8, 8), 10)
    assert largest_activation("mlp:512x2", (64,), 10) == 512


def test_model_spec_str():
    assert str(ModelSpec("mlp", (512, 512))) == "mlp:512-512"
    assert str(parse_spec("mlp:512x2,dropout=0.5")) == "mlp:512-512,dropout=0.5"


# ------------------------------------------------------------------ CLI


def test_cli_models_list():
    from fitscope.cli import app
    import fitscope.cli.models  # noqa: F401  (registers the command group)

    runner = CliRunner()
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "mlp:512x2" in result.output and "resnet:16x3" in result.output
    assert "0.600" in result.output  # forward MFLOP of mlp:512x2 on 8x8
    help_result = runner.invoke(app, ["models", "--help"])
    assert help_result.exit_code == 0 and "fitscope models list" in help_result.output


def test_cli_models_table_and_bad_shape():
    from fitscope.cli.models import spec_examples_table

    rows = {r["spec"]: r for r in spec_examples_table((1, 8, 8))}
    assert rows["mlp:512x2"]["flops"] == 600064
    assert rows["cnn1d:32x3"]["input"] == "1x40"
    rows = {r["spec"]: r for r in spec_examples_table((1, 40))}
    assert rows["cnn:32-64"]["flops"] is None

    from fitscope.cli import app

    result = CliRunner().invoke(app, ["models", "list", "--shape", "3x"])
    assert isinstance(result.exception, ConfigError)


# ------------------------------------------------------------------ one layer plan: ensembles and plain models


def _copy_model_k_into_plain(ens, k: int, plain) -> None:
    """Load model ``k`` of an ensemble into a plain model, layer by layer (the layouts are documented)."""
    sd = {}
    if ens.spec.family == "mlp":
        for i, layer in enumerate(ens.hidden, 1):
            sd[f"fc{i}.weight"] = layer.weight[k].T
            sd[f"fc{i}.bias"] = layer.bias[k]
    else:
        for i, (conv, norm) in enumerate(zip(ens.convs, ens.norms), 1):
            rows = slice(k * conv.out_channels, (k + 1) * conv.out_channels)
            sd[f"conv{i}.weight"] = conv.weight[rows]
            if conv.bias is not None:
                sd[f"conv{i}.bias"] = conv.bias[rows]
            sd[f"norm{i}.weight"], sd[f"norm{i}.bias"] = norm.weight[rows], norm.bias[rows]
            if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
                sd[f"norm{i}.running_mean"], sd[f"norm{i}.running_var"] = norm.running_mean[rows], norm.running_var[rows]
                sd[f"norm{i}.num_batches_tracked"] = norm.num_batches_tracked
    sd["out.weight"], sd["out.bias"] = ens.out.weight[k].T, ens.out.bias[k]
    plain.load_state_dict({name: value.detach().clone() for name, value in sd.items()}, strict=True)


@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("spec,shape", [("mlp:16-8", (1, 8, 8)), ("cnn:4-8", (3, 8, 8)), ("cnn:6x3", (1, 5, 5)),
                                        ("cnn1d:4-8,kernel=3", (2, 9))])
def test_ensemble_model_k_is_the_plain_model_of_the_same_spec_and_norm(spec, shape, norm):
    from fitscope.models import build_plain

    k_models, k = 3, 1
    ens = build(spec, shape, 5, seeds=[3, 9, 4], norm=norm)
    plain = build_plain(spec, shape, 5, seed=0, norm=norm)
    per_model = sum(p.numel() for p in ens.parameters()) // k_models
    assert per_model == sum(p.numel() for p in plain.parameters())
    assert sorted(p.numel() // k_models for p in ens.parameters()) == sorted(p.numel() for p in plain.parameters())
    # Same network: model k's weights loaded into the plain model give the same logits, on inputs that
    # differ per model (so a norm that mixed models would show). strict=True: the same layers, no more.
    _copy_model_k_into_plain(ens, k, plain)
    ens.eval(), plain.eval()
    x = torch.randn(k_models, 4, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ens(x)[k], plain(x[k]), rtol=1e-5, atol=1e-5)
        if norm == "group":  # no batch statistics: train mode too
            ens.train(), plain.train()
            torch.testing.assert_close(ens(x)[k], plain(x[k]), rtol=1e-5, atol=1e-5)


def test_parameter_counts_by_hand_and_the_norm_defaults():
    from fitscope.models import build_plain, layer_plan

    # cnn:32-64 on 1x8x8, 10 classes: conv 1*32*9 and 32*64*9 weights, norm scale+shift 2*(32+64), head 64*10+10;
    # GroupNorm keeps the convolutions' biases (32 + 64), BatchNorm drops them.
    batch = 288 + 18432 + 2 * 96 + 650
    group = batch + 96
    assert layer_plan("cnn:32-64", (1, 8, 8), 10, norm="batch").parameter_count() == batch == 19562
    assert layer_plan("cnn:32-64", (1, 8, 8), 10, norm="group").parameter_count() == group
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build("cnn:32-64", (1, 8, 8), 10, seeds=[0])) == batch  # ensembles default to batch
    assert count(build_plain("cnn:32-64", (1, 8, 8), 10, seed=0)) == group  # plain models default to group
    assert count(build_plain("cnn:32-64", (1, 8, 8), 10, seed=0, norm="batch")) == batch


def test_bad_norm():
    from fitscope.models import build_plain

    with pytest.raises(ConfigError, match=r"^norm: expected one of batch, group, got 'layer'$"):
        build("cnn:4-8", (1, 8, 8), 3, seeds=[0], norm="layer")
    with pytest.raises(ConfigError, match=r"^norm: expected one of batch, group, got 'layer'$"):
        build_plain("cnn:4-8", (1, 8, 8), 3, seed=0, norm="layer")
    with pytest.raises(ConfigError, match=r"^norm: expected 'batch' for a resnet spec"):
        build("resnet:4x2", (1, 8, 8), 3, seeds=[0], norm="group")


def test_cli_models_list_says_which_study_uses_which_norm():
    from fitscope.cli import app
    from fitscope.cli.models import norm_table

    rows = {r["norm"]: r for r in norm_table()}
    assert rows["batch"]["params"] == 19562 and rows["group"]["params"] == 19562 + 96
    assert "audit" in rows["batch"]["used_by"] and "privacy-study" in rows["group"]["used_by"]
    assert "DP-SGD" in rows["group"]["used_by"]
    result = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "19,658" in line or "19,562" in line]
    assert any("group" in line and "privacy-study" in line for line in lines)
    assert any("batch" in line and "audit" in line for line in lines)
