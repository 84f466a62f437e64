"""Fetch GraphiQL and React from the npm registry into gateway/static/graphiql/.

Run at setup (`make run`, `make test`), so the explorer works with no internet at run
time and nothing third-party is committed. Each tarball is checked against the
registry's sha512 integrity before anything is extracted.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

REGISTRY = os.environ.get("NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")
TARGET = Path(__file__).resolve().parent.parent / "gateway" / "static" / "graphiql"

# package, version, {path in tarball: file name in TARGET}
PACKAGES = [
    ("react", "18.3.1", {"package/umd/react.production.min.js": "react.production.min.js"}),
    (
        "react-dom",
        "18.3.1",
        {"package/umd/react-dom.production.min.js": "react-dom.production.min.js"},
    ),
    (
        "graphiql",
        "3.8.3",
        {
            "package/graphiql.min.js": "graphiql.min.js",
            "package/graphiql.min.css": "graphiql.min.css",
        },
    ),
]

START_JS = """// Starts GraphiQL against this gateway's /graphql (same origin, nothing external).
(function () {
  var fetcher = GraphiQL.createFetcher({ url: window.location.origin + '/graphql' });
  var query = [
    '# The portal home page. Put your token in the Headers tab:',
    '#   {"Authorization": "Bearer <token printed by make run>"}',
    'query PortalHome {',
    '  me {',
    '    name email company',
    '    invoices(first: 10) {',
    '      totalCount edges { node { id number status total currency amountDue } }',
    '    }',
    '    tickets(first: 10) { totalCount edges { node { id subject status } } }',
    '    files(first: 10) { edges { node { id name size downloadUrl } } }',
    '  }',
    '}',
  ].join('\\n');
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultQuery: query,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: false,
  }));
})();
"""


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (https registry)
        return bytes(response.read())


def fetch(package: str, version: str, files: dict[str, str], target: Path) -> None:
    meta = json.loads(_get(f"{REGISTRY}/{package}/{version}"))
    tarball = _get(meta["dist"]["tarball"])
    algorithm, _, expected = meta["dist"]["integrity"].partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if actual != expected:
        raise SystemExit(f"{package}@{version}: integrity mismatch, refusing to install")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member, name in files.items():
            extracted = archive.extractfile(member)
            if extracted is None:
                raise SystemExit(f"{package}@{version}: {member} missing from the tarball")
            (target / name).write_bytes(extracted.read())


def main() -> int:
    marker = TARGET / ".versions"
    start_digest = hashlib.sha256(START_JS.encode()).hexdigest()[:16]
    wanted = json.dumps([[p, v] for p, v, _ in PACKAGES] + [["start.js", start_digest]])
    if marker.exists() and marker.read_text() == wanted:
        return 0
    tmp = TARGET.with_name("graphiql.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for package, version, files in PACKAGES:
        fetch(package, version, files, tmp)
    (tmp / "start.js").write_text(START_JS)
    (tmp / ".versions").write_text(wanted)
    shutil.rmtree(TARGET, ignore_errors=True)
    tmp.rename(TARGET)
    print(f"GraphiQL assets in {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
