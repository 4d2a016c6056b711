#!/usr/bin/env python3
"""A no-op persistent-mode handler for benches/throughput.rs: announces it is ready, then
answers every job line with {"id": ..., "status": "ok"} and does nothing else."""
import json
import sys


def main():
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    readline = sys.stdin.readline
    while True:
        line = readline()
        if not line:
            return
        job = json.loads(line)
        out.write(json.dumps({"id": job["id"], "status": "ok"}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
