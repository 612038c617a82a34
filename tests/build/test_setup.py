"""The build says in one sentence what is missing when CHOLMOD's headers cannot be found."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_missing_cholmod_headers_give_one_clear_sentence(tmp_path):
    env = dict(os.environ, SUITESPARSE_INCLUDE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"SUITESPARSE_INCLUDE_DIR={tmp_path} holds no cholmod.h" in proc.stderr
    assert "Traceback" not in proc.stderr
