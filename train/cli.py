"""`bst-train`: the training and export side (synth, embed, train, report, rank, dev-as-eval, export, demo)."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bst_rt.runtime.cliutil import guarded  # noqa: F401  (commands use @guarded)

app = typer.Typer(
    name="bst-train",
    help="Train, export and demo Broad Sound Taxonomy classifiers (PyTorch side of bst-rt).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # usage errors as one plain line, never a panel that breaks a path at the console width
)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=lambda v: _show_version(v), is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Train, export and demo Broad Sound Taxonomy classifiers (PyTorch side of bst-rt)."""


def _show_version(value: bool) -> None:
    from bst_rt.runtime.cliutil import print_version

    if value:
        print_version("bst-train")


class Engine(str, Enum):
    onnx = "onnx"
    torch = "torch"


class Provider(str, Enum):  # the same choices and default as `bst-rt --provider`
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"

# Commands are added below, one function each; heavy imports stay inside the command bodies.


@app.command("synth")
@guarded
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write BSD10k/, BSD35k-CS/, eval/ and eval_labels.csv into.")],
    *,
    per_class: Annotated[int, typer.Option(help="BSD10k clips per class (BSD35k-CS: as many on average).", min=1)] = 12,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes byte-identical files.", min=0)] = 0,
    cs_noise: Annotated[float, typer.Option(help="Share of BSD35k-CS labels made wrong.", min=0.0, max=1.0)] = 0.3,
    n_eval: Annotated[int, typer.Option("--eval", help="Clips in the evaluation package (8 or more).", min=8)] = 40,
    with_features: Annotated[bool, typer.Option("--with-features", help="Write stand-in embeddings too.")] = False,
) -> None:
    """Write a deterministic synthetic corpus in the BSD10k, BSD35k-CS and evaluation-package layouts."""
    from bst_rt.train.synth import write_corpus

    paths = write_corpus(out, per_class=per_class, seed=seed, cs_noise=cs_noise, n_eval=n_eval,
                         with_features=with_features, show_progress=True)
    typer.echo(f"wrote {paths.dev}, {paths.cs}, {paths.eval} and {paths.eval_labels}")


@app.command("embed")
@guarded
def embed_cmd(
    dataset_dir: Annotated[Path, typer.Argument(help="Development set (BSD10k / BSD35k-CS layout) or evaluation package.")],
    *,
    clap_ckpt: Annotated[Path | None, typer.Option(help="LAION-CLAP fusion checkpoint (630k-audioset-fusion-best.pt).")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="CLAP at seeded random weights (tests/demo only).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of --random-weights.")] = 0,
    tokenizer_dir: Annotated[Path | None, typer.Option(help="Real RoBERTa tokenizer folder (vocab.json, merges.txt).")] = None,
    engine: Annotated[Engine, typer.Option(help="onnx (exported graphs, as deployed) or torch (laion-clap itself).")] = Engine.onnx,
    graphs: Annotated[Path | None, typer.Option(help="Reuse CLAP graphs exported to this folder (onnx engine).")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips / texts per encoder call.", min=1)] = 8,
    provider: Annotated[Provider, typer.Option(help="onnxruntime provider; auto picks CUDA only when it really works.")] = Provider.auto,
    threads: Annotated[int | None, typer.Option(help="onnxruntime intra-op threads (default: all cores).")] = None,
    device: Annotated[str, typer.Option(help="torch engine: auto, cpu, cuda or cuda:N.")] = "cpu",
    builtin_class_texts: Annotated[bool, typer.Option("--builtin-class-texts", help="Use the built-in class texts "
                                                      "where metadata/BST_description.csv is unreadable.")] = False,
    ray: Annotated[str | None, typer.Option(help="Embed on a Ray cluster: 'auto' or its ADDRESS (onnx engine; "
                                                 "needs the [ray] extra).")] = None,
    ray_concurrency: Annotated[int, typer.Option(min=1, help="--ray: encoder actors.")] = 1,
    ray_gpus_per_actor: Annotated[float, typer.Option(min=0.0, help="--ray: GPUs per actor (CUDA).")] = 0.0,
) -> None:
    """Write CLAP audio, text and masked-text embeddings under DATASET_DIR/features/ (skips files already there)."""
    from bst_rt.train.embed import embed_dataset

    if graphs is None and (clap_ckpt is None) == (not random_weights):
        raise typer.BadParameter("give --clap-ckpt PATH or --random-weights (or --graphs DIR), exactly one")
    if random_weights:
        typer.echo("WARNING: CLAP at RANDOM weights: these embeddings are meaningless outside tests and demos.", err=True)
    if ray is not None:
        from bst_rt.runtime.distributed import RayOptions
        from bst_rt.train.embed_ray import embed_dataset_ray

        if engine.value != "onnx":
            raise typer.BadParameter("--ray runs the exported graphs: use --engine onnx")
        report = embed_dataset_ray(dataset_dir, ray_options=RayOptions(ray, ray_concurrency, num_gpus=ray_gpus_per_actor),
                                   graphs=graphs, clap_ckpt=clap_ckpt, random_weights=random_weights, seed=seed,
                                   tokenizer_dir=tokenizer_dir, batch_size=batch_size, provider=provider.value,
                                   threads=threads, log=typer.echo)
        typer.echo(report.summary())
        return
    report = embed_dataset(dataset_dir, engine=engine.value, clap_ckpt=clap_ckpt,  # type: ignore[arg-type]
                           random_weights=random_weights, seed=seed, tokenizer_dir=tokenizer_dir, graphs=graphs,
                           batch_size=batch_size, provider=provider.value, threads=threads, device=device,
                           builtin_class_texts=builtin_class_texts, log=typer.echo)
    typer.echo(report.summary())


@app.command("train")
@guarded
def train_cmd(
    data: Annotated[Path, typer.Argument(help="BSD10k folder with features/ (official layout).")],
    *,
    out: Annotated[Path, typer.Option(help="Run folder to write (an existing one resumes).")],
    cs: Annotated[Path | None, typer.Option("--cs", help="BSD35k-CS folder with features/ (v2mix, naive-concat).")] = None,
    families: Annotated[str | None, typer.Option(help="Comma-separated family names (default: every config).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override max epochs of every family.", min=1)] = None,
    patience: Annotated[int | None, typer.Option(help="Override early-stopping patience.", min=1)] = None,
    width_div: Annotated[int | None, typer.Option(help="Divide hidden widths (tests/demos; 1 = official).", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Pool seed (a seed is a parameter, not a family).", min=0)] = 0,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds: every family at each (members "
                                                   "`family@seed` beyond the first), e.g. 0,1,2.")] = None,
    pool: Annotated[str | None, typer.Option(help="Pool file naming families and seeds: a name under "
                                                  "bst_rt/train/pools (seed-p33: the seed's 31 families) or a path.")] = None,
    external: Annotated[list[str] | None, typer.Option(help="NAME=PATH of esc50, us8k or fsd50k (repeatable).")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads. The trained numbers depend on this count (recorded in "
                                              "the registry; a resume must use the same), so the default is a fixed 1, "
                                              "also the fastest for these small heads on a few cores.", min=1)] = 1,
    quick: Annotated[bool, typer.Option("--quick", help="Reduced sizes of the test pool (small synthetic data).")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=JSON family option override (repeatable).")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA only if a test kernel works), cpu, cuda or cuda:N.")] = "cpu",
    ray: Annotated[str | None, typer.Option(help="Spread the (family, fold) trainings over Ray: auto (running "
                                                 "cluster or a new local one) or a cluster ADDRESS.")] = None,
    ray_cpus: Annotated[float, typer.Option(help="CPU cores each Ray fold task requests.", min=0.01)] = 1.0,
    ray_gpus: Annotated[float | None, typer.Option(help="GPU share each Ray fold task requests on CUDA "
                                                        "(default 0.25).", min=0.01, max=1.0)] = None,
    progress: Annotated[bool, typer.Option(help="Progress bars on stderr (terminal only).")] = True,
) -> None:
    """Train every family on the five official folds (progress bars: epochs, validation figure, ETAs); resumes an
    interrupted run."""
    import torch

    from bst_rt.train.pool import QUICK_OVERRIDES, run_pool
    from bst_rt.train.progress import PoolProgress, default_progress

    torch.set_num_threads(threads)  # not torch's default: that follows the machine and OMP_NUM_THREADS
    overrides = dict(QUICK_OVERRIDES) if quick else {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise typer.BadParameter(f"--set expects KEY=JSON, got {item!r}") from None
    overrides.update({k: v for k, v in (("epochs", epochs), ("patience", patience), ("width_div", width_div)) if v})
    names = [f.strip() for f in families.split(",") if f.strip()] if families else None
    roots = {}
    for item in external or []:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise typer.BadParameter(f"--external expects NAME=PATH, got {item!r}")
        roots[name.strip()] = Path(path)
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()] if seeds else None
    except ValueError:
        raise typer.BadParameter(f"--seeds expects comma-separated integers, got {seeds!r}") from None
    from bst_rt.train.device import check_spec, resolve_device

    # fail before loading data: a bad spec, or (without Ray) a CUDA request this machine cannot honour
    device = str(resolve_device(device)) if ray is None else check_spec(device)
    bars = default_progress(progress)
    try:
        reg = run_pool(data, cs, out, names, seed=seed, overrides=overrides, external=roots,
                       log=bars.print if isinstance(bars, PoolProgress) else typer.echo,
                       device=device, progress=bars, ray=ray, seeds=seed_list, pool_file=pool,
                       ray_options={"cpus": ray_cpus, "gpu_fraction": ray_gpus, "threads": threads or 1})
    finally:
        bars.close()
    typer.echo(f"trained on: {', '.join(reg.get('devices', [])) or 'nothing new (resumed)'}")
    for name, pool in reg.get("ensembles", {}).items():
        typer.echo(f"ensemble {name}: hF {100 * pool['hF']:.2f} ({len(pool['weights'])} families)")
    typer.echo(f"wrote {out / 'registry.json'} (`bst-train report {out}` for the table)")
    if not reg.get("ensembles"):
        from bst_rt.runtime.errors import BstError
        from bst_rt.train.ensemble import why_no_pool
        from bst_rt.train.pool import load_run

        raise BstError(f"training finished without an ensemble: {why_no_pool(load_run(out))}")


@app.command("report")
@guarded
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `bst-train train`.")],
) -> None:
    """Per-family hF (mean ± std over folds), exclusions, best single model, ensembles and the seed's Table 4."""
    from bst_rt.train.report import format_report

    typer.echo(format_report(run_dir))


@app.command("rank")
@guarded
def rank(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `bst-train train`.")],
    data: Annotated[Path, typer.Argument(help="Development set (BSD10k layout with features/).")],
    k: Annotated[int, typer.Option("--top-k", min=1, help="Ensemble top-k candidates (plus each family's top-1).")] = 3,
    max_override_share: Annotated[float, typer.Option(
        help="Tuning constraint: most System 1's held-out override rate may be (inference decides each item "
             "alone); System 2 gets half.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Ranker random seed.")] = 0,
) -> None:
    """Fit the candidate ranker (nested 5-fold CV), freeze the four systems into RUN/systems.json."""
    from bst_rt.train.systems import RankOptions, format_heldout_table, load_systems, rank_run

    meta = rank_run(run_dir, data, RankOptions(k=k, max_override_share=max_override_share, seed=seed),
                    log=typer.echo)
    nested = meta["nested_cv"]
    typer.echo(f"top-12 ensemble (OOF) hF {100 * nested['ensemble_oof_hF']:.2f}")
    for sid in (1, 2):
        r, th = nested[f"system{sid}"], meta["thresholds"][str(sid)]
        typer.echo(f"system {sid} nested ranker estimate hF {100 * r['hF']:.2f} "
                   f"({100 * (r['hF'] - nested['ensemble_oof_hF']):+.2f}), overrides {100 * r['override_share']:.1f}%, "
                   f"fixed {r['fixed']} / broke {r['broken']}; frozen tau={th['tau']} (CV override rate "
                   f"{100 * th['override_share']:.1f}% <= share {100 * r['max_override_share']:.1f}%) "
                   f"cross-parent tau={th['cross_parent_tau']} min score={th['cross_parent_min_score']}")
    typer.echo(format_heldout_table(meta, load_systems(run_dir)))
    typer.echo(f"wrote {run_dir / 'ranker'} and {run_dir / 'systems.json'}")


@app.command("dev-as-eval")
@guarded
def dev_as_eval_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder with systems.json (after `bst-train rank`).")],
    data: Annotated[Path, typer.Argument(help="Development set (BSD10k layout with features/).")],
    bundle: Annotated[Path | None, typer.Option(help="Deployment check through the exported bundle (audio files "
                                                     "-> ONNX) instead of the all-folds torch chain.")] = None,
) -> None:
    """Run the development set label-blind: each clip through the chain frozen from its own fold (the estimate), then
    through the all-folds chain (the deployment check); print Table 3 of both next to the nested estimate."""
    from bst_rt.runtime.atomic import atomic_write_text
    from bst_rt.train.dev_eval import TorchChain, dev_as_eval, format_table3, nested_figures
    from bst_rt.train.dev_eval_folds import FoldRespectingChain

    folds = FoldRespectingChain(run_dir, data)
    if bundle is not None:
        from bst_rt.train.bundle_chain import BundleChain

        check = BundleChain(bundle)
    else:
        check = TorchChain(run_dir, data)
    nested = nested_figures(run_dir)
    report = dev_as_eval(folds, data)
    typer.echo(format_table3(report, nested, folds.policies))
    report["deployment_check"] = dev_as_eval(check, data)
    typer.echo("\n" + format_table3(report["deployment_check"], nested, check.policies))
    atomic_write_text(run_dir / "dev_eval.json", json.dumps(report, indent=2) + "\n")


@app.command("export")
@guarded
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder from `bst-train train` + `bst-train rank`.")],
    *,
    out: Annotated[Path, typer.Option(help="Bundle folder to write (e.g. artifacts/NAME).")],
    clap_ckpt: Annotated[Path | None, typer.Option(help="LAION-CLAP fusion checkpoint (.pt).")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="CLAP at seeded random weights (demo only).")] = False,
    tokenizer_dir: Annotated[Path | None, typer.Option(help="Real roberta-base tokenizer folder (vocab.json, merges.txt).")] = None,
    clap_dir: Annotated[Path | None, typer.Option(help="Reuse CLAP graphs already exported to this folder.")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also ship int8 CLAP graphs.")] = False,
    data: Annotated[Path | None, typer.Option(help="Dev dataset whose embeddings validate the heads (default: the run's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --random-weights.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle folder.")] = False,
) -> None:
    """Export a trained, ranked run to one verified bundle (ONNX graphs + manifest.json) for `bst-rt predict`."""
    from bst_rt.export.bundle import ExportOptions, export_bundle

    if clap_ckpt is not None and random_weights:
        raise typer.BadParameter("give --clap-ckpt or --random-weights, not both")
    export_bundle(run, out, ExportOptions(clap_dir=clap_dir, clap_ckpt=clap_ckpt, tokenizer_dir=tokenizer_dir,
                                          random_weights=random_weights,
                                          seed=seed, int8=int8, data_dir=data, force=force), log=typer.echo)


@app.command("demo")
@guarded
def demo_cmd(
    *,
    work: Annotated[Path, typer.Option(help="Working folder (corpus, embeddings, run, CSVs).")] = Path("artifacts/demo-work"),
    bundle: Annotated[Path, typer.Option(help="Where the bundle goes (recorded as the default bundle).")] = Path("artifacts/demo"),
    per_class: Annotated[int, typer.Option(min=7, help="Synthetic clips per class (7: the fewest the official folds split).")] = 10,
    epochs: Annotated[int, typer.Option(min=1, help="Max epochs per fold.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the corpus, CLAP's random weights and training.")] = 0,
) -> None:
    """The whole chain on the synthetic corpus with CLAP at RANDOM weights: ends with a scored CSV and a bundle."""
    from bst_rt.train.demo import DemoOptions, format_summary, run_demo

    summary = run_demo(DemoOptions(work=work, bundle=bundle, per_class=per_class, seed=seed, epochs=epochs), log=typer.echo)
    typer.echo(format_summary(summary))
