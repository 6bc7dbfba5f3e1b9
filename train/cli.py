"""The training floor's `bst-train` commands: train, report, rank, dev-as-eval.

The `bst-train` console script is `bst_rt.export.cli.app`, which adds the commands that need the floor above (embed,
which exports the CLAP graphs it runs; export; demo) or the synthetic corpus beside training (synth). Imports run
export -> train -> runtime, never back, so this module only defines its commands and the app settings both apps
share (`new_app`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bst_rt.runtime.cliutil import guarded  # noqa: F401  (commands use @guarded)

HELP = "Train, export and demo Broad Sound Taxonomy classifiers (PyTorch side of bst-rt)."


def new_app() -> typer.Typer:
    """An empty `bst-train` app (settings, --version); the caller adds the commands."""
    app = typer.Typer(
        name="bst-train",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode=None,  # usage errors as one plain line, never a panel that breaks a path at the console width
    )
    app.callback()(_main)
    return app


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


app = new_app()  # the training floor's commands alone; `bst-train` itself is bst_rt.export.cli.app

# Commands are added below, one function each; heavy imports stay inside the command bodies.


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
        from bst_rt.train.run import load_run

        raise BstError(f"training finished without an ensemble: {why_no_pool(load_run(out))}")


@app.command("report")
@guarded
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `bst-train train`.")],
    html: Annotated[Path | None, typer.Option(
        help="Also write DIR/report.html (self-contained) with the figures as PNG + SVG; needs the [report] extra.")
    ] = None,
) -> None:
    """Per-family hF (mean ± std over folds), exclusions, best single model, ensembles and the seed's Table 4."""
    from bst_rt.train.report import format_report

    if html is not None:
        from bst_rt.runtime.report_figures import pyplot

        pyplot()  # the missing extra is one line before anything else
    typer.echo(format_report(run_dir))
    if html is not None:
        from bst_rt.train.report_pool import write_pool_report

        typer.echo(f"wrote {write_pool_report(run_dir, html)} (figures as PNG and SVG beside it)")


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
