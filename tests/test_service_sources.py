"""Many cameras sharing the interpreters, in a real `python -m app` process on the CPU.

Two live cameras that both deliver more frames than one interpreter can take share it
through the latest-frame slots (the source that waited longest goes first): neither may
get less than 40% of the processed frames. Events and stats are per source; a spec given
twice gets a distinct name ("#2").
"""

import json
import subprocess

from app_support import read_events, start_app
from tiny_bundle import tiny_bundle  # noqa: F401


def test_two_live_sources_share_one_interpreter_fairly(tiny_bundle, tmp_path):  # noqa: F811
    events_path, stats_path = str(tmp_path / "events.jsonl"), str(tmp_path / "stats.json")
    spec = "synthetic:320x240@240"
    proc = start_app(["--model", tiny_bundle, "--source", spec, "--source", spec, "--runtime", "cpu", "--threads",
                      "1", "--max-frames", "600", "--events", events_path, "--stats", stats_path, "--headless",
                      "--no-reference"])
    try:
        _, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err[-2000:]
    stats = json.load(open(stats_path))["sources"]
    names = [spec, spec + "#2"]
    assert list(stats) == names
    processed = [stats[n]["processed"] for n in names]
    total = sum(processed)
    shares = [p / float(total) for p in processed]
    print("processed per source {} of {} -> shares {:.3f} / {:.3f}; dropped {} / {}".format(
        processed, total, shares[0], shares[1], stats[names[0]]["dropped"], stats[names[1]]["dropped"]))
    assert total == 600 and min(shares) >= 0.4
    # Both cameras delivered more than was processed: the interpreter was the bottleneck.
    assert sum(stats[n]["dropped"] for n in names) > 0
    frames = [e for e in read_events(events_path) if e["type"] == "detections"]
    assert sorted(set(e["source"] for e in frames)) == names
    for name in names:
        indices = [e["frame"] for e in frames if e["source"] == name]
        assert indices == sorted(indices) and len(indices) == stats[name]["processed"]
