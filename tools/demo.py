#!/usr/bin/env python
"""The main job on a local default: start the test server, load sample data, run backup.yml.

The URI (with generated credentials) reaches ansible-playbook through the environment,
never its command line. The last line printed is where the backup went.
"""

import argparse
import glob
import os
import subprocess
import sys

import collection_link

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backup-root", default=os.path.join(ROOT, ".cache", "demo", "backups"),
                        help="where the backups go (default: %(default)s, ignored by git and by the build)")
    args = parser.parse_args()
    uri = subprocess.run([PYTHON, os.path.join(ROOT, "tools", "testserver.py"), "start"],
                         check=True, stdout=subprocess.PIPE).stdout.decode().strip().splitlines()[-1]
    env = dict(os.environ, MONGODB_URI=uri, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    subprocess.run([PYTHON, os.path.join(ROOT, "tools", "sample_data.py")], env=env, check=True)
    os.makedirs(args.backup_root, mode=0o700, exist_ok=True)
    collection_link.expose()
    playbook = [os.path.join(os.path.dirname(PYTHON), "ansible-playbook"),
                os.path.join(ROOT, "playbooks", "backup.yml"),
                "-e", "backup_root=%s" % args.backup_root]
    subprocess.run(playbook, env=env, cwd=ROOT, check=True)
    manifests = glob.glob(os.path.join(args.backup_root, "localhost", "*", "manifest.json"))
    backups = sorted((os.path.dirname(m) for m in manifests), key=os.path.getmtime)
    print("stop the server with: make server-stop")
    print("backup written to %s" % backups[-1])


if __name__ == "__main__":
    main()
