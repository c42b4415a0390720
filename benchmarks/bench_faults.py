"""Faults and bad input, run as a user would (the real command lines, in subprocesses), with a table at the end.

Cases: bad inputs to both programs (each must exit 2 with a message naming the file, key or value, change nothing
the user made, and stop before the work starts), kill -9 of the trainer and of an editor during an edit followed by
``--resume`` (edit units lost: goal at most one window), and kill -9 during checkpoint writes (every checkpoint left
must load; the next run removes the temporary files).

    python benchmarks/bench_faults.py            # ~6 min on 2 CPU cores

Prints: cases tried, clear errors, faults survived, units lost, files harmed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_stream_edit import EDIT_CONFIG  # noqa: E402
from test_stream_train import CONFIG as TRAIN_CONFIG  # noqa: E402

from tools.make_synthetic_scene import make_synthetic_scene  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}


def digest(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for f in folders if f.exists()
            for p in sorted(f.rglob("*")) if p.is_file()}


def run(program: str, args: list[str], env: dict | None = None, timeout: float = 600) -> tuple[int, str, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / program), *args], env=env or ENV, capture_output=True,
                          text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - start


def bad_input_cases(work: Path, scene: Path, nerf: Path) -> list[tuple[str, str, list[str], str]]:
    """``(name, program, args, text the message must contain)``."""
    train = ["--config", str(work / "train.txt"), "--datadir", str(scene), "--basedir", str(work / "bad")]
    edit = ["--config", str(work / "edit.txt"), "--datadir", str(scene), "--basedir", str(work / "bad"),
            "--ckpt", str(nerf), "--editor", "editing_targets:counting_editor"]
    (work / "not_a_ckpt.th").write_text("hello\n")
    (work / "typo.txt").write_text(TRAIN_CONFIG + "n_itres = 5\n")
    partial = work / "ip2p_partial"
    if not partial.exists():
        from ip2p_models.tiny import build_tiny_ip2p

        build_tiny_ip2p(partial)
        shutil.rmtree(partial / "unet")
    gap = work / "scene_gap"
    if not gap.exists():
        shutil.copytree(scene, gap)
        (gap / "frames" / "cam01" / "000002.png").unlink()
    return [
        ("train: missing scene folder", "stream_train.py", train[:2] + ["--datadir", str(work / "nope")], "nope"),
        ("train: misspelt config key", "stream_train.py", ["--config", str(work / "typo.txt"), "--datadir",
                                                           str(scene)], "n_itres"),
        ("train: n_iters -5", "stream_train.py", train + ["--n_iters", "-5"], "n_iters = -5"),
        ("train: batch_size 0", "stream_train.py", train + ["--batch_size", "0"], "batch_size = 0"),
        ("train: --device cuda:3", "stream_train.py", train + ["--device", "cuda:3"], "cuda:3"),
        ("train: text file as --ckpt", "stream_train.py", train + ["--ckpt", str(work / "not_a_ckpt.th")],
         "not a torch checkpoint"),
        ("train: missing --ckpt", "stream_train.py", train + ["--ckpt", str(work / "ckpt-7.th")], "not found"),
        ("train: into a fitted run", "stream_train.py", ["--config", str(work / "train.txt"), "--datadir",
                                                         str(scene), "--basedir", str(nerf.parent), "--expname",
                                                         nerf.name], "already holds a fitted NeRF"),
        ("train: ld_per_frame 1.5", "stream_train.py", train + ["--ld_per_frame", "1.5"], "ld_per_frame = 1.5"),
        ("train: frame missing mid-camera", "stream_train.py", train[:2] + ["--datadir", str(gap), "--basedir",
                                                                            str(work / "bad")], "000002"),
        ("train: num_frames too many", "stream_train.py", train + ["--num_frames", "9"], "num_frames = 9"),
        ("edit: --ip2p_device cuda:3", "stream_edit.py", edit[:-2] + ["--ip2p_device", "cuda:3"], "cuda:3"),
        ("edit: IP2P folder without unet/", "stream_edit.py", edit[:-2] + ["--ip2p_model", str(partial)],
         "misses unet/"),
        ("edit: empty prompt", "stream_edit.py", edit + ["--prompt", " "], "prompt is empty"),
        ("edit: n_iters -5", "stream_edit.py", edit + ["--n_iters", "-5"], "n_iters = -5"),
        ("edit: sequence_length 1", "stream_edit.py", edit + ["--sequence_length", "1"], "sequence_length = 1"),
        ("edit: --resume without an edit", "stream_edit.py", edit + ["--resume"], "no edit to continue"),
        ("edit: unknown editor", "stream_edit.py", edit[:-1] + ["nosuchmodule:factory"], "nosuchmodule"),
        ("edit: checkpoint of other frames", "stream_edit.py", edit + ["--num_frames", "3"], "frames"),
    ]


def kill_edit(work: Path, scene: Path, nerf: Path, victim: str) -> dict:
    """kill -9 the trainer (``main``) or an editor during an edit, then --resume; units lost and harmed files."""
    run_dir = work / "log" / f"kill_{victim}"
    shutil.rmtree(run_dir, ignore_errors=True)
    calls = work / f"calls_{victim}.txt"
    calls.unlink(missing_ok=True)
    args = ["--config", str(work / "edit.txt"), "--datadir", str(scene), "--basedir", str(work / "log"),
            "--expname", run_dir.name, "--ckpt", str(nerf), "--editor", "editing_targets:counting_editor",
            "--n_iters", "100000", "--post_edit_iters", "5", "--path_views", "1"]
    env = {**ENV, "EDIT_CALLS_FILE": str(calls), "EDIT_SLEEP": "1.0"}
    before_nerf = digest(nerf, scene)
    proc = subprocess.Popen([sys.executable, str(ROOT / "stream_edit.py"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while (not calls.exists() or len(calls.read_text().split()) < 3) and proc.poll() is None:
        time.sleep(0.2)
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                               text=True).stdout.split()]
    editors = [p for p in children if "spawn" in Path(f"/proc/{p}/cmdline").read_text(errors="ignore")]
    killed_at = len(calls.read_text().split())
    os.kill(proc.pid if victim == "main" else editors[0], signal.SIGKILL)
    exit_code = proc.wait(timeout=60)
    time.sleep(3)
    orphans = [p for p in editors if Path(f"/proc/{p}").exists()
               and "Z" not in Path(f"/proc/{p}/status").read_text().split("State:")[1][:3]]
    state = json.loads((run_dir / "edit_state.json").read_text())
    recorded = len([k for k in state["done"] if k.count("/") >= 2])
    after_kill = len(calls.read_text().split())
    # the killed run asked for 100000 iterations to keep fitting while the editor worked; the resume asks for few
    code, _, _ = run("stream_edit.py", args + ["--resume", "--n_iters", "20"], env={**env, "EDIT_SLEEP": "0"})
    redone = len(calls.read_text().split()) - after_kill
    total = 8
    return {"case": f"kill -9 of the {'trainer' if victim == 'main' else 'editor'} during an edit, --resume",
            "survived": code == 0 and not orphans, "units_lost": after_kill + redone - total,
            "harmed": len([k for k, v in digest(nerf, scene).items() if before_nerf.get(k) != v]),
            "detail": f"exit {exit_code} after the kill ({killed_at} units done, {recorded} recorded), "
                      f"{len(orphans)} editor(s) left running, resume exit {code}, {redone} unit(s) edited then"}


def kill_checkpoint_writes(work: Path, times: int = 5) -> dict:
    from tests.test_faults import WRITER_SCRIPT

    folder = work / "ckpt_kills"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    script = folder / "writer.py"
    script.write_text(WRITER_SCRIPT.format(root=str(ROOT), target=str(folder / "ckpt-{}.th")))
    import torch

    for k in range(times):
        writer = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=ENV)
        writer.stdout.readline()
        time.sleep(0.05 + 0.07 * k)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    readable = sum(1 for p in folder.glob("ckpt-*.th") if torch.load(p)["x"].numel() == 2_000_000)
    from common.atomic import remove_stale_temporaries

    litter = len(remove_stale_temporaries(folder, "ckpt-*.th"))
    return {"case": f"kill -9 during checkpoint writes (x{times})", "survived": readable == 3, "units_lost": 0,
            "harmed": 3 - readable, "detail": f"{readable}/3 checkpoints load; {litter} temporary file(s) removed "
                                              "by the next start"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_faults")
    opts = parser.parse_args(argv)
    work = opts.out
    work.mkdir(parents=True, exist_ok=True)
    scene = work / "scene"
    if not (scene / "gt").is_dir():
        make_synthetic_scene(scene, cams=3, frames=4, width=48, height=36, videos=False)
    (work / "train.txt").write_text(TRAIN_CONFIG)
    (work / "edit.txt").write_text(EDIT_CONFIG)
    nerf = work / "log" / "nerf"
    if not list(nerf.glob("ckpt-*.th")):
        code, out, _ = run("stream_train.py", ["--config", str(work / "train.txt"), "--datadir", str(scene),
                                               "--basedir", str(work / "log"), "--expname", "nerf",
                                               "--render_test", "0", "--render_path", "0", "--n_iters", "20"])
        assert code == 0, out

    rows = []
    for name, program, args, expected in bad_input_cases(work, scene, nerf):
        before = digest(scene, nerf)
        code, out, seconds = run(program, args)
        clear = code == 2 and expected in out and "Traceback" not in out
        harmed = len([k for k, v in digest(scene, nerf).items() if before.get(k) != v])
        rows.append({"case": name, "clear": clear, "harmed": harmed, "detail": f"exit {code}, {seconds:.0f} s"})
        print(f"{name}: {'clear' if clear else 'NOT CLEAR'} (exit {code}, {seconds:.0f} s, {harmed} file(s) changed)",
              flush=True)
        if not clear:
            print("   " + out.strip().splitlines()[-1][:300])
    faults = [kill_edit(work, scene, nerf, "main"), kill_edit(work, scene, nerf, "editor"),
              kill_checkpoint_writes(work)]
    for f in faults:
        print(f"{f['case']}: {'survived' if f['survived'] else 'NOT SURVIVED'}; {f['units_lost']} unit(s) lost; "
              f"{f['detail']}", flush=True)
    print("\n| cases tried | clear errors | faults survived | units lost (max per fault) | files harmed |")
    print("|--:|--:|--:|--:|--:|")
    print(f"| {len(rows) + len(faults)} | {sum(r['clear'] for r in rows)}/{len(rows)} | "
          f"{sum(f['survived'] for f in faults)}/{len(faults)} | {max(f['units_lost'] for f in faults)} | "
          f"{sum(r['harmed'] for r in rows) + sum(f['harmed'] for f in faults)} |")


if __name__ == "__main__":
    main()
