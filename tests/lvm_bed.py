"""Stand-ins for the LVM commands, for the lvm_snapshot role's command-level tests (this machine's kernel has no
device-mapper snapshot targets). One script, installed under the names lvm, vgs, lvs, lvcreate and lvremove in a
directory put first on PATH, logs every call (its name and argv) and answers as LVM prints. A snapshot volume is a
directory, /dev/<vg>/<name> under the bed, holding a copy of the origin's directory taken when lvcreate ran: what
a snapshot is, the origin frozen at that instant. mount and umount are logged too, then run for real (the role
mounts the snapshot "device" with -t none -o ro,bind: a real read-only bind mount, which ansible.posix.mount sees in
/proc/self/mountinfo as it sees any mount). state.json switches: fail_lvcreate, fail_umount (target is busy).
"""

import json
import os
import shutil
import stat
import sys

SHIM = r'''#!%(python)s
import json, os, shutil, sys
BED = %(bed)r
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
with open(os.path.join(BED, "commands.log"), "a") as log:
    log.write(json.dumps([name] + args) + "\n")
state_path = os.path.join(BED, "state.json")
state = json.load(open(state_path))
if name == "umount" and state.get("fail_umount"):
    sys.stderr.write("umount: %%s: target is busy.\n" %% args[-1]); sys.exit(32)
if name in ("mount", "umount"):
    os.execv(%(real)r[name], [name] + args)
if name == "lvm":
    print("  LVM version:     2.03.16(2) (2022-05-18)")
elif name == "vgs":
    vg = args[-1]
    if vg not in state:
        sys.stderr.write('  Volume group "%%s" not found\n' %% vg); sys.exit(5)
    print("  %%s;10240.00;5120.00;4.00" %% vg)
elif name == "lvs":
    vg = args[-1]
    if vg not in state:
        sys.stderr.write('  Volume group "%%s" not found\n  Cannot process volume group %%s\n' %% (vg, vg)); sys.exit(5)
    for lv, attr in sorted(state[vg].items()):
        # the columns asked for with -o: lvol's lv_name,size,lv_attr (with ; as separator), or lv_name alone
        print("  %%s" %% lv if args[args.index("-o") + 1] == "lv_name" else "  %%s;8192.00;%%s" %% (lv, attr))
elif name == "lvcreate":
    if "--test" in args:
        sys.exit(0)
    snapshot = args[args.index("-n") + 1]
    vg, origin = args[-1].split("/")
    if state.get("fail_lvcreate"):
        sys.stderr.write("  Insufficient free space\n"); sys.exit(5)
    state[vg][snapshot] = "swi-a-s---"
    shutil.copytree(os.path.join(BED, "origin", vg, origin), os.path.join(BED, "dev", vg, snapshot))
elif name == "lvremove":
    if "--test" in args:
        sys.exit(0)
    vg, lv = args[-1].split("/")
    del state[vg][lv]
    shutil.rmtree(os.path.join(BED, "dev", vg, lv))
json.dump(state, open(state_path, "w"))
'''

NAMES = ("lvm", "vgs", "lvs", "lvcreate", "lvremove", "mount", "umount")


class LvmBed:
    """``bin`` goes first on PATH; ``origin(vg, lv)`` is the live volume's content; ``commands()`` the log."""

    def __init__(self, root, volumes=(("vg0", "data"),)):
        self.root = str(root)
        self.bin = os.path.join(self.root, "bin")
        os.makedirs(self.bin)
        state = {}
        for vg, lv in volumes:
            state.setdefault(vg, {})[lv] = "-wi-ao----"
            os.makedirs(self.origin(vg, lv))
            os.makedirs(os.path.join(self.root, "dev", vg))
        self.save(state)
        real = dict((name, shutil.which(name)) for name in ("mount", "umount"))
        script = os.path.join(self.bin, "lvm-shim")
        with open(script, "w") as handle:
            handle.write(SHIM % {"python": sys.executable, "bed": self.root, "real": real})
        os.chmod(script, stat.S_IRWXU)
        for name in NAMES:
            os.symlink(script, os.path.join(self.bin, name))

    def origin(self, vg, lv):
        return os.path.join(self.root, "origin", vg, lv)

    def device(self, vg, name):
        return os.path.join(self.root, "dev", vg, name)

    def state(self):
        with open(os.path.join(self.root, "state.json")) as handle:
            return json.load(handle)

    def save(self, state):
        with open(os.path.join(self.root, "state.json"), "w") as handle:
            json.dump(state, handle)

    def commands(self):
        path = os.path.join(self.root, "commands.log")
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            return [json.loads(line) for line in handle]

    def environment(self):
        return {"PATH": self.bin + os.pathsep + os.environ.get("PATH", "")}


def can_mount(tmp_path):
    """Whether this machine lets the tests make a read-only bind mount (root in a sandbox that allows it)."""
    import subprocess
    source, target = tmp_path / "probe-src", tmp_path / "probe-dst"
    source.mkdir()
    target.mkdir()
    done = subprocess.run(["mount", "-t", "none", "-o", "ro,bind", str(source), str(target)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if done.returncode == 0:
        subprocess.run(["umount", str(target)], check=False)
    return done.returncode == 0, done.stdout.decode(errors="replace").strip()


def mounts_under(path):
    """The mount points at or below ``path`` (from /proc/self/mountinfo), deepest first."""
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return sorted((p for p in points if p == str(path) or p.startswith(prefix)), key=len, reverse=True)


def unmount_all_under(path):
    """Teardown: no bind mount of a test may outlive it, whatever the role left behind."""
    import subprocess
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False)
