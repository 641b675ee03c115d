"""`make stress`: the long form of the reliability suite, and the table it ends with.

Runs the same drivers as the quick tests (tests/reliability/), with bigger counts:

1. load: P processes x T threads for S seconds against one root (shared plans, own plans,
   registry create/delete, shared job logs, caches, readers), then every ack verified;
2. kills: a child running the scripted mix is SIGKILLed K times, each kill checked
   (integrity, reconcile twice, every acknowledged write present);
3. hostile input: N hypothesis-drawn calls plus the 50 MB cases, each either a success or a
   PlanDBError that changed nothing;
4. corruption: every kind of damage to one plan file, with several seeds, isolated.

Prints the table (operations run, kills survived, inputs tried, writes lost, errors leaked,
ops/s and p99 latency per operation kind) and exits 1 if anything was lost, leaked or broken.
Defaults take about 10-15 minutes on a 2-core machine; `--quick` runs the test-sized form.

    python scripts/stress.py [--load-seconds 300] [--kills 500] [--inputs 5000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from reliability.corruption import DAMAGE, build_root, damage, isolation_problems  # noqa: E402
from reliability.hostile import Harness, huge_cases, runner  # noqa: E402
from reliability.kills import run_kills  # noqa: E402
from reliability.load import LoadSettings, run_load  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_hostile(root: Path, inputs: int, seed: int) -> Harness:
    h = Harness(root, strict=False)
    try:
        runner(h, inputs, seed=seed)()
        for label, fn in huge_cases(h):
            h.attempt(label, fn)
    finally:
        h.close()
    return h


def run_corruption(work: Path, seeds: int) -> tuple[int, list[str]]:
    base = work / "pristine"
    before = build_root(base)
    victim = sorted(before)[1]
    cases, problems = 0, []
    for kind in DAMAGE:
        for seed in range(seeds if kind in ("garbage", "page_garbage", "header_garbage") else 1):
            root = work / f"{kind}-{seed}"
            shutil.copytree(base, root)
            damage(root, victim, kind, seed=seed)
            problems += isolation_problems(root, victim, before, kind)
            cases += 1
            shutil.rmtree(root)
    return cases, problems


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--load-seconds", type=float, default=300.0)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--kills", type=int, default=500)
    ap.add_argument("--inputs", type=int, default=5000, help="hypothesis examples")
    ap.add_argument("--corruption-seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--quick", action="store_true", help="test-sized counts (about a minute)")
    ap.add_argument("--work", type=Path, help="keep every root here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.load_seconds, args.threads, args.kills = 5.0, 2, 50
        args.inputs, args.corruption_seeds = 300, 1
    work = args.work or Path(tempfile.mkdtemp(prefix="plandb-stress-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"work dir {work}, seed {args.seed}")

    log(f"load: {args.processes} processes x {args.threads} threads x {args.load_seconds:g} s")
    load = run_load(work / "load" / "db", work / "load" / "out", LoadSettings(
        processes=args.processes, threads=args.threads, duration=args.load_seconds,
        seed=args.seed))
    log(f"load: {load.total_ops} operations, {load.acked_writes} acknowledged writes, "
        f"{len(load.failures())} failures")

    def progress(res):
        if res.rounds % 50 == 0:
            log(f"kills: {res.kills} so far, {res.ops_acked} operations acknowledged")

    log(f"kills: {args.kills}")
    kills = run_kills(work / "kills" / "db", work / "kills" / "work", kills=args.kills,
                      seed=args.seed, progress=progress)
    log(f"kills: {kills.kills} survived in {kills.rounds} rounds, "
        f"{len(kills.failures())} failures")

    log(f"hostile input: {args.inputs} drawn calls + the 50 MB cases")
    hostile = run_hostile(work / "hostile" / "db", args.inputs, args.seed)
    log(f"hostile input: {hostile.tried} tried, {len(hostile.findings)} findings")

    log("corruption: every kind of damage to one plan file")
    cases, corruption = run_corruption(work / "corruption", args.corruption_seeds)
    log(f"corruption: {cases} cases, {len(corruption)} problems")

    leaked_hostile = [f for f in hostile.findings if f.what.startswith("raised ")]
    other_hostile = [f for f in hostile.findings if not f.what.startswith("raised ")]
    lost = load.lost + kills.lost
    phantom = load.phantom + kills.phantom
    leaked = load.leaked + kills.leaked + [f"{f.call}: {f.what}" for f in leaked_hostile]
    problems = (load.problems + kills.problems + corruption
                + [f"{f.call}: {f.what}" for f in other_hostile])
    ops = load.total_ops + kills.ops_acked + hostile.tried
    elapsed = time.monotonic() - started

    print(f"\nplandb stress, seed {args.seed}, {elapsed / 60:.1f} min\n")
    print(table([
        ("operations run", f"{ops:,} (load {load.total_ops:,}, under kills "
                           f"{kills.ops_acked:,} acknowledged, hostile {hostile.tried:,})"),
        ("kills survived", f"{kills.kills:,} of {kills.rounds:,} rounds "
                           f"(cut calls: {kills.in_flight_applied} landed, "
                           f"{kills.in_flight_dropped} rolled back)"),
        ("inputs tried", f"{hostile.tried:,} ({hostile.refused:,} refused with a typed "
                         f"error, {hostile.succeeded:,} accepted)"),
        ("corruption cases", f"{cases} (each isolated to its own plan)"),
        ("writes lost", f"{len(lost)} (must be 0)"),
        ("phantom writes", f"{len(phantom)} (must be 0)"),
        ("errors leaked", f"{len(leaked)} (must be 0)"),
        ("other problems", f"{len(problems)} (must be 0)"),
    ]))
    print(f"\nload: {args.processes} processes x {args.threads} threads, "
          f"{load.elapsed:.0f} s, {load.total_ops / load.elapsed:,.0f} ops/s in all\n")
    summary = load.summary()
    print(f"  {'operation':<20} {'ops':>9} {'ops/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    for kind, s in summary.items():
        print(f"  {kind:<20} {s['ops']:>9,} {s['ops_per_s']:>9,.1f} {s['p50_ms']:>9.2f} "
              f"{s['p99_ms']:>9.2f}")
    bad = [("lost", lost), ("phantom", phantom), ("leaked", leaked), ("problem", problems)]
    for label, items in bad:
        for item in items[:20]:
            print(f"\n{label}: {item}")
    if args.json:
        args.json.write_text(json.dumps({
            "seed": args.seed, "minutes": elapsed / 60, "operations_run": ops,
            "kills_survived": kills.kills, "inputs_tried": hostile.tried,
            "corruption_cases": cases, "writes_lost": len(lost), "phantom_writes": len(phantom),
            "errors_leaked": len(leaked), "other_problems": len(problems),
            "load": {"processes": args.processes, "threads": args.threads,
                     "seconds": load.elapsed, "per_kind": summary},
        }, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if lost or phantom or leaked or problems else 0


if __name__ == "__main__":
    sys.exit(main())
