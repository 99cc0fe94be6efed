"""`python -m tunery.train --config CONFIG.json`: the job runner's entry point.

Exit codes: 0 succeeded (result.json written), 1 failed (error.json written), 75 paused
(checkpoint written), 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunery.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON dump of tunery.train.TrainConfig")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    args = parser.parse_args(argv)

    from pathlib import Path

    from .config import TrainConfig
    from .errors import TrainError
    from .events import write_json_atomic
    from .loop import run

    try:
        config = TrainConfig.from_json_file(args.config)
    except TrainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        try:  # still tell the runner why, when the config names an output folder
            out = json.loads(Path(args.config).read_text()).get("out_dir")
            if out:
                Path(out).mkdir(parents=True, exist_ok=True)
                write_json_atomic(Path(out) / "error.json", exc.to_dict())
        except Exception:
            pass
        return 1
    if args.resume:
        config.resume = True
    result = run(config)
    if result.error:
        print(f"error: {result.error['message']}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
