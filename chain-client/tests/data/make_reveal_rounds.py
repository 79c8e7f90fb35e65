"""Writes reveal_rounds.json: the drand round bittensor-drand 2.0.0's get_encrypted_commit_v2 targets
for epoch-pipeline states a validator meets on a runtime with dynamic tempo.

The SDK reads the wall clock, so each run freezes it with libfaketime (Debian's faketime):

    python3 -m venv /tmp/drand && /tmp/drand/bin/pip install bittensor-drand==2.0.0
    for now in "2026-12-06 00:00:00" "2026-12-06 00:00:02"; do
      TZ=UTC faketime -f "$now" /tmp/drand/bin/python make_reveal_rounds.py
    done > reveal_rounds.json.parts
    python3 make_reveal_rounds.py --join reveal_rounds.json.parts > reveal_rounds.json
"""

import json
import sys
import time

# (name, last_epoch_block, pending_epoch_at, subnet_epoch_index, tempo, blocks_since_last_step,
#  current_block, reveal_period_epochs, block_time)
CASES = [
    ("mid-epoch", 1000, 0, 50, 360, 100, 1100, 1, 12.0),
    ("mid-epoch, reveal period 2", 1000, 0, 50, 360, 100, 1100, 2, 12.0),
    ("mid-epoch, reveal period 3", 1000, 0, 50, 360, 100, 1100, 3, 12.0),
    ("just after an epoch ran", 1360, 0, 51, 360, 0, 1360, 1, 12.0),
    ("two blocks before the epoch block", 1000, 0, 50, 360, 358, 1358, 1, 12.0),
    ("the commit lands on the epoch block", 1000, 0, 50, 360, 359, 1359, 1, 12.0),
    ("the head is the epoch block", 1000, 0, 50, 360, 360, 1360, 1, 12.0),
    ("an owner-triggered epoch pending later in the epoch", 1000, 1200, 50, 360, 100, 1100, 1, 12.0),
    ("an owner-triggered epoch pending at the next block", 1000, 1101, 50, 360, 100, 1100, 1, 12.0),
    ("an owner-triggered epoch pending in the past", 1000, 1050, 50, 360, 100, 1100, 1, 12.0),
    ("a pending epoch, reveal period 2", 1000, 1200, 50, 360, 100, 1100, 2, 12.0),
    ("tempo raised mid-epoch", 1000, 0, 50, 7200, 100, 1100, 1, 12.0),
    ("tempo lowered below the blocks already past", 1000, 0, 50, 360, 500, 1500, 1, 12.0),
    ("the longest tempo", 1000, 0, 50, 50400, 100, 1100, 1, 12.0),
    ("blocks since the last step beyond the longest tempo", 1000, 0, 50, 360, 50401, 1100, 1, 12.0),
    ("fast blocks", 1000, 0, 50, 360, 100, 1100, 1, 0.25),
    ("fast blocks, short tempo", 40, 0, 4, 10, 3, 43, 1, 0.25),
    ("fast blocks, short tempo, pending epoch", 40, 45, 4, 10, 3, 43, 2, 0.25),
    ("a six-second block", 1000, 0, 50, 360, 100, 1100, 1, 6.0),
]


def run():
    now = time.time()
    out = []
    for name, last, pending, index, tempo, since, block, period, block_time in CASES:
        _, round_ = bittensor_drand.get_encrypted_commit_v2(
            [0, 1], [65535, 100], 7, last, pending, index, tempo, since, block, period,
            block_time, bytes(32),
        )
        out.append({
            "name": name, "now_unix": now, "last_epoch_block": last,
            "pending_epoch_at": pending, "subnet_epoch_index": index, "tempo": tempo,
            "blocks_since_last_step": since, "current_block": block,
            "reveal_period_epochs": period, "block_time": block_time, "reveal_round": round_,
        })
    try:
        bittensor_drand.get_encrypted_commit_v2(
            [0], [1], 7, 1000, 0, 50, 0, 100, 1100, 1, 12.0, bytes(32))
        refused = None
    except ValueError as e:
        refused = str(e)
    print(json.dumps({"now_unix": now, "cases": out, "tempo_zero_refused": refused}))


def join(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    assert all(r["tempo_zero_refused"] for r in runs), "tempo 0 must be refused"
    cases = [c for r in runs for c in r["cases"]]
    json.dump({"source": "bittensor-drand 2.0.0 get_encrypted_commit_v2, clock frozen by faketime",
               "cases": cases}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--join"]:
        join(sys.argv[2])
    else:
        import bittensor_drand
        run()
