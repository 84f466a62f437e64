"""Fetch the browser pages' assets from the npm registry: GraphiQL and React into
gateway/static/graphiql/, Swagger UI (the REST facade's reference at /api/docs) into
gateway/static/swagger-ui/.

Run at setup (`make run`, `make test`), so both pages work with no internet at run
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
STATIC = Path(__file__).resolve().parent.parent / "gateway" / "static"

# package, version, {path in tarball: file name in the target folder}
GRAPHIQL = [
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

SWAGGER_UI = [
    (
        "swagger-ui-dist",
        "5.36.0",
        {
            "package/swagger-ui-bundle.js": "swagger-ui-bundle.js",
            "package/swagger-ui.css": "swagger-ui.css",
        },
    ),
]

GRAPHIQL_START_JS = """// Starts GraphiQL against this gateway's /graphql
// (same origin, nothing external).
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


SWAGGER_UI_START_JS = """// Starts Swagger UI on this gateway's /api/openapi.json
// (same origin, nothing external).
(function () {
  window.ui = SwaggerUIBundle({
    url: window.location.origin + '/api/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
  });
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


def install(packages: list[tuple[str, str, dict[str, str]]], start_js: str, target: Path) -> None:
    """`packages` and their start script into `target`, unless the same versions are there."""
    marker = target / ".versions"
    start_digest = hashlib.sha256(start_js.encode()).hexdigest()[:16]
    wanted = json.dumps([[p, v] for p, v, _ in packages] + [["start.js", start_digest]])
    if marker.exists() and marker.read_text() == wanted:
        return
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for package, version, files in packages:
        fetch(package, version, files, tmp)
    (tmp / "start.js").write_text(start_js)
    (tmp / ".versions").write_text(wanted)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    print(f"assets in {target}", file=sys.stderr)


def main() -> int:
    install(GRAPHIQL, GRAPHIQL_START_JS, STATIC / "graphiql")
    install(SWAGGER_UI, SWAGGER_UI_START_JS, STATIC / "swagger-ui")
    return 0


if __name__ == "__main__":
    sys.exit(main())
