"""OIDC tokens against a JWKS served by the test: what is accepted, what answers 401.

The identity provider is a small Starlette app under uvicorn serving `/jwks.json` and
counting how often the gateway fetches it; tokens are real JWTs signed with keys made here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.auth import mint_dev_token
from tests.conftest import GatewayServer
from tests.servers import serve
