"""The packaging rules of DESIGN.md section 8 that hadolint does not know (called by hack/check-dockerfile.sh).

Usage: check_dockerfile.py DOCKERFILE DOCKERIGNORE. Prints one ok/FAIL line per rule; exit status 1 when a
rule failed, 0 otherwise.
"""

import json
import re
import sys


def instructions(text):
    """The Dockerfile's instructions as (OP, rest) pairs: continuation lines joined, comments and blank lines
    dropped."""
    logical = []
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            logical.append(line)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


def stages_of(instr):
    """[(base image with ARG defaults expanded, [(op, rest)...])], one entry per FROM."""
    args = {}
    for op, rest in instr:
        if op == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k.strip()] = v.strip().strip('"')

    def expand(s):
        return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), s)

    stages = []
    for op, rest in instr:
        if op == "FROM":
            stages.append((expand(rest.split()[0]), []))
        elif stages:
            stages[-1][1].append((op, rest))
    return stages


def pinned(image):
    if "@sha256:" in image:
        return True
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    return bool(tag) and tag != "latest"


def check(stages, dockerignore):
    """Prints one line per rule; returns the number of failed rules."""
    failures = 0

    def rule(ok, msg):
        nonlocal failures
        print(f"  {'ok' if ok else 'FAIL'}: {msg}")
        failures += 0 if ok else 1

    rule(len(stages) >= 2, f"multi-stage build ({len(stages)} stages)")
    builder_ops = [x for s in stages[:-1] for x in s[1]]
    final_image, final_ops = stages[-1] if stages else ("", [])
    rule(
        any(re.match(r"(docker\.io/(library/)?)?rust:\d+\.\d+", img) for img, _ in stages[:-1]),
        f"Rust builder pinned to a version ({', '.join(img for img, _ in stages[:-1])})",
    )
    rule(all(pinned(img) for img, _ in stages), "every base image pinned by tag or digest (no latest)")
    runs = [r for op, r in builder_ops if op == "RUN"]
    manifest_copy = next(
        (i for i, (op, r) in enumerate(builder_ops) if op == "COPY" and "Cargo.toml" in r and "Cargo.lock" in r),
        None,
    )
    src_copy = next((i for i, (op, r) in enumerate(builder_ops) if op == "COPY" and re.search(r"\bsrc\b", r)), None)
    dep_build = next(
        (
            i
            for i, (op, r) in enumerate(builder_ops)
            if op == "RUN"
            and "cargo build" in r
            and manifest_copy is not None
            and i > manifest_copy
            and (src_copy is None or i < src_copy)
        ),
        None,
    )
    rule(
        manifest_copy is not None and dep_build is not None and src_copy is not None,
        "dependency-caching layer: Cargo.toml + Cargo.lock copied and built before src/",
    )
    rule(
        any(re.search(r"cargo build\b.*--release", r) and "--locked" in r for r in runs),
        "cargo build --release --locked",
    )
    rule(
        final_image.startswith("gcr.io/distroless/") or final_image == "scratch",
        f"final stage has no shell (distroless or scratch): {final_image}",
    )
    users = [r for op, r in final_ops if op == "USER"]
    m = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1]) if users else None
    rule(
        bool(m) and int(m.group(1)) != 0 and (m.group(2) is None or int(m.group(2)) != 0),
        f"numeric non-root USER in the final stage ({users[-1] if users else 'none'})",
    )
    exposed = {p.split("/")[0] for op, r in final_ops if op == "EXPOSE" for p in r.split()}
    rule({"8443", "9090"} <= exposed, f"EXPOSE 8443 9090 ({' '.join(sorted(exposed)) or 'none'})")

    def exec_form(op):
        vals = [r for o, r in final_ops if o == op]
        try:
            return json.loads(vals[-1]) if vals else None
        except ValueError:
            return "shell form"

    rule(
        exec_form("ENTRYPOINT") == ["/mesh-admission"],
        f'ENTRYPOINT ["/mesh-admission"] ({exec_form("ENTRYPOINT")})',
    )
    rule(exec_form("CMD") == ["serve"], f'CMD ["serve"] ({exec_form("CMD")})')
    final_copies = [r for op, r in final_ops if op in ("COPY", "ADD")]
    rule(
        all(r.startswith("--from=") for r in final_copies) and not any(op == "RUN" for op, _ in final_ops),
        "final stage only copies built artifacts (no RUN, nothing from the build context)",
    )
    try:
        with open(dockerignore) as f:
            ignored = {line.strip().rstrip("/").lstrip("/") for line in f if line.strip() and not line.startswith("#")}
    except FileNotFoundError:
        ignored = set()
    need = {"target", ".git", "certs", ".tools"}
    rule(
        need <= ignored,
        f".dockerignore excludes {', '.join(sorted(need))}"
        + (f" (missing: {', '.join(sorted(need - ignored))})" if not need <= ignored else ""),
    )
    return failures


def main():
    dockerfile, dockerignore = sys.argv[1], sys.argv[2]
    with open(dockerfile) as f:
        text = f.read()
    return 1 if check(stages_of(instructions(text)), dockerignore) else 0


if __name__ == "__main__":
    sys.exit(main())
