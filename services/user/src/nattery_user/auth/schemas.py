from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from nattery_shared.validation import Text


class LoginRequest(BaseModel):
    email: Text = Field(max_length=254)
    password: str = Field(max_length=1024)
    org_id: uuid.UUID | None = Field(default=None, description="org to act in; default: the first one")


class RefreshRequest(BaseModel):
    refresh_token: Text = Field(max_length=200)


class TokenExchangeRequest(BaseModel):
    grant_type: Literal["api_token"] = "api_token"
    api_token: Text = Field(max_length=200)


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class AccessToken(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
