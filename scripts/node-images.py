#!/usr/bin/env python3
"""The real node's images, made without a registry: one-layer OCI archives that
`ctr -n k8s.io images import` takes.

  node-images.py OUT_DIR PAUSE_BINARY

writes OUT_DIR/busybox.tar (augur.local/busybox:1, Debian's static busybox with every applet
linked in /bin: the workload, the nginx stand-in) and OUT_DIR/pause.tar (augur.local/pause:1, a
static pause binary: the pod sandbox). Deterministic: the same inputs give the same digests.
"""

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile


def layer(files):
    """A gzip'd tar of (path, bytes or symlink target, mode, is_link); its digest and diff id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({os.path.dirname(p) for p, *_ in files if os.path.dirname(p)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path, content, mode, is_link in files:
            info = tarfile.TarInfo(path)
            info.mtime = 0
            if is_link:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, content, 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), mode
                tar.addfile(info, io.BytesIO(content))
    uncompressed = raw.getvalue()
    compressed = gzip.compress(uncompressed, mtime=0)
    return compressed, "sha256:" + hashlib.sha256(uncompressed).hexdigest()


def archive(out, name, files, config):
    blobs = {}

    def blob(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    compressed, diff_id = layer(files)
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(compressed)}
    image_config = {"architecture": "amd64", "os": "linux", "config": config, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(image_config, sort_keys=True).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config_desc, "layers": [layer_desc]}
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(json.dumps(manifest, sort_keys=True).encode())}
    manifest_desc["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    path = os.path.join(out, name.split("/")[-1].split(":")[0] + ".tar")
    with tarfile.open(path, "w") as tar:
        def add(member, data):
            info = tarfile.TarInfo(member)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index, sort_keys=True).encode())
        for digest, data in sorted(blobs.items()):
            add("blobs/sha256/" + digest.split(":")[1], data)
    return path


def main():
    out, pause = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    busybox = open("/bin/busybox", "rb").read()
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    files = [("bin/busybox", busybox, 0o755, False)]
    files += [(f"bin/{a}", "busybox", 0, True) for a in sorted(set(applets)) if a != "busybox"]
    files += [("tmp/.keep", b"", 0o644, False)]
    print(archive(out, "augur.local/busybox:1", files, {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}))
    print(archive(out, "augur.local/pause:1", [("pause", open(pause, "rb").read(), 0o755, False)], {"Entrypoint": ["/pause"]}))


if __name__ == "__main__":
    main()
