"""select.md (each rung's table, the choice and why, the held-back comparison, what the search cost) and
select.png (tuning score against training time per candidate; pruned candidates stop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from sslzoo.files import atomic_write, atomic_write_text


def _chains(result: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """Candidate -> its trials in rung order, each with the candidate's cumulative seconds at its end."""
    chains: Dict[str, List[Dict[str, Any]]] = {}
    for record in sorted(result["trials"], key=lambda r: (r["target_units"], int(r["trial"]))):
        chain = chains.setdefault(record["candidate"], [])
        spent = (chain[-1]["cumulative_seconds"] if chain else 0.0) + float(record.get("seconds", 0.0))
        chain.append({**record, "cumulative_seconds": spent})
    return chains


def markdown(result: Dict[str, Any]) -> str:
    settings, plan, winner = result["settings"], result["plan"], result["winner"]
    lines = ["# sslzoo select", "",
             f"Command: `{result['command']}`" if result.get("command") else "", "",
             f"Budget {result['budget_seconds'] / 60:.1f} min; spent {result['seconds'] / 60:.1f} min "
             f"({result['seconds']:.0f} s). Score on the tuning part: "
             f"{'leave-one-out kNN' if settings['score'] == 'knn' else '2-fold linear probe'} top-1 "
             f"({result['labelled']['tuning_images']} images); "
             f"{result['labelled']['held_back_images']} held-back images read once, at the end.", ""]
    if result.get("stopped"):
        lines += [f"The search stopped early: {result['stopped']}.", ""]
    if result["excluded"]:
        lines += ["Left out (could not train on this data at this image size):", ""]
        lines += [f"- {name}: {reason}" for name, reason in result["excluded"].items()] + [""]
    lines += [f"Rung unit: {plan['unit_images']} training images; eta = {plan['eta']}; rungs keep "
              f"{', '.join(map(str, plan['rung_sizes']))} candidates at {', '.join(map(str, plan['rung_units']))} "
              "units.", ""]
    for rung, units in enumerate(plan["rung_units"]):
        rows = [r for r in result["trials"] if r["target_units"] == units]
        if not rows:
            continue
        promoted = {r["parent"] for r in result["trials"] if r["target_units"] > units}
        lines += [f"## Rung {rung}: {units} unit{'s' if units > 1 else ''}", "",
                  "| candidate | setting | score | seconds | |", "|---|---|---|---|---|"]
        for record in sorted(rows, key=lambda r: -(r["score"] if r["score"] is not None else -1)):
            setting = _setting(result, record["candidate"])
            if record["score"] is None:
                status, score = f"diverged: {record.get('diverged', '')}", "-"
            else:
                score = f"{record['score']:.2f}"
                status = "continues" if record["trial"] in promoted else (
                    "winner" if record["candidate"] == winner["candidate"] and rung == len(plan["rung_units"]) - 1
                    else "pruned")
            lines.append(f"| {record['candidate']} | {setting} | {score} | {record.get('seconds', 0):.0f} | {status} |")
        lines.append("")
    lines += ["## The choice", "",
              f"**{winner['candidate']}** ({winner['config']}{_also(result, winner)}): "
              f"the best tuning score of the last rung, then trained on to {winner['units']} units "
              f"(tuning score {winner['score']:.2f})"
              + (f", stopped by the budget before its schedule's end ({winner['horizon_units']} units)"
                 if winner.get("cut_by_budget") else "")
              + (f"; its schedule was re-sized from the planned {winner['planned_horizon_units']} to "
                 f"{winner['horizon_units']} units, as the rungs left more of the budget than planned"
                 if winner.get("horizon_units") != winner.get("planned_horizon_units", winner.get("horizon_units"))
                 else "")
              + f". Its run folder: `{winner['run']}` (`sslzoo export --run <output>/{winner['run']} --output "
                "exported/<name>`).", "",
              "Held-back part (never read before this table): kNN bank and linear probe on the tuning part.", "",
              "| role | candidate | units | tuning score | held-back kNN top-1 | held-back linear top-1 |",
              "|---|---|---|---|---|---|"]
    for row in result["held_back"]:
        lines.append(f"| {row['role']} | {row['candidate']} | {row['units']} | {row['tuning_score']:.2f} | "
                     f"{row['knn_top1']:.2f} | {row['linear_top1']:.2f} |")
    phases = result.get("phases", {})
    lines += ["", "## Cost", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {name.replace('_seconds', '').replace('_', ' ')} | {value:.0f} |" for name, value in phases.items()]
    per_rung = {}
    for record in result["trials"]:
        per_rung[record["target_units"]] = per_rung.get(record["target_units"], 0.0) + float(record.get("seconds", 0))
    scoring = sum(float(r.get("score_seconds", 0.0)) for r in result["trials"])
    lines += ["", "Wall-clock per rung: " + ", ".join(f"{u} units {s:.0f} s" for u, s in sorted(per_rung.items()))
              + f"; scoring (feature extraction and kNN on the tuning part) {scoring:.0f} s of it.",
              "Calibration (per arm: seconds per training image, fixed seconds per trial): "
              + ", ".join(f"{name} {1000 * s['seconds_per_image']:.2f} ms / {s['overhead_seconds']:.0f} s"
                          for name, s in result["speeds"].items()) + ".", ""]
    return "\n".join(lines)


def _also(result: Dict[str, Any], winner: Dict[str, Any]) -> str:
    return ", " + _setting(result, winner["candidate"]) if winner["setting"] else ""


def _setting(result: Dict[str, Any], candidate: str) -> str:
    for record in result["trials"]:
        if record["candidate"] == candidate and record.get("setting"):
            return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in record["setting"].items())
    return "as shipped" if "#" not in candidate else ""


def plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chains = _chains(result)
    winner = result["winner"]["candidate"]
    figure, axes = plt.subplots(figsize=(8, 5))
    palette = plt.get_cmap("tab20").colors  # 16 arms by default: tab10 would repeat colours
    axes.set_prop_cycle(color=palette)
    for name, chain in sorted(chains.items()):
        xs = [c["cumulative_seconds"] for c in chain if c["score"] is not None]
        ys = [c["score"] for c in chain if c["score"] is not None]
        if name == winner:
            line, = axes.plot(xs, ys, "-o", linewidth=2.5, color="black", label=f"{name} (winner)", zorder=3)
            final = result["winner"]
            end = (xs[-1] if xs else 0.0) + float(final.get("seconds", 0.0))
            axes.plot([xs[-1] if xs else 0.0, end], [ys[-1] if ys else final["score"], final["score"]], "--",
                      color=line.get_color(), zorder=3)
            axes.plot(end, final["score"], "*", markersize=14, color=line.get_color(), zorder=4)
        else:
            line, = axes.plot(xs, ys, "-o", alpha=0.7, label=name)
            if xs:
                axes.plot(xs[-1], ys[-1], "x", markersize=10, color=line.get_color())  # pruned here
    axes.set_xlabel("training seconds of the candidate (cumulative over its rungs)")
    axes.set_ylabel("tuning score (top-1 %)")
    axes.set_title("sslzoo select: successive halving (x: pruned; star: the winner after its final training)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110), suffix=".png")
    plt.close(figure)


def write(output: Path, result: Dict[str, Any]) -> None:
    atomic_write_text(output / "select.md", markdown(result))
    plot(result, output / "select.png")
