"""Checks that every key of the chart's values.yaml is documented (called by hack/check-chart.sh).

A comment line must stand right above each top-level key and each key nested up to two levels; the
contents of the free-form resources/securityContext examples are exempt. Usage: check_values_docs.py
VALUES_YAML. Prints each undocumented key; exit status 1 when there is one, 0 otherwise.
"""

import re
import sys

# Top-level keys whose nested keys are free-form examples, not documented one by one.
FREE = {"resources", "podSecurityContext", "securityContext"}


def undocumented(lines):
    """`line N: key: value` for each key without a comment line right above it."""
    parent, missing = None, []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([\w.-]+):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        if indent == 0:
            parent = key
        elif parent in FREE or indent > 4:
            continue
        if not lines[i - 1].strip().startswith("#"):
            missing.append(f"line {i + 1}: {line.strip()}")
    return missing


def main():
    with open(sys.argv[1]) as f:
        missing = undocumented(f.read().split("\n"))
    for m in missing:
        print(f"  undocumented key (no comment line above): {m}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
