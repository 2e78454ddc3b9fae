from __future__ import annotations

import uuid

from pydantic import AwareDatetime, BaseModel, Field

from nattery_shared.auth import Role
from nattery_shared.validation import Text

# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is proven by use.
EMAIL_PATTERN = r"^[^@\s\x00]{1,64}@[^@\s\x00]+\.[^@\s\x00]{2,}$"  # no NUL: PostgreSQL text cannot hold it


class Member(BaseModel):
    id: uuid.UUID
    email: str
    display_name: str
    org_id: uuid.UUID
    role: Role
    disabled: bool
    created_at: AwareDatetime


class UserCreate(BaseModel):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=254)
    display_name: Text = Field(default="", max_length=200)
    role: Role = Role.VIEWER
    password: str | None = Field(
        default=None, description="omit to have one generated and returned once", max_length=256
    )


class UserCreated(Member):
    generated_password: str | None = Field(default=None, description="shown once when none was given")


class UserUpdate(BaseModel):
    display_name: Text | None = Field(default=None, max_length=200)
    role: Role | None = None
    disabled: bool | None = None


class MembershipOut(BaseModel):
    org_id: uuid.UUID
    org_name: str
    role: Role


class Me(BaseModel):
    id: uuid.UUID
    email: str
    display_name: str
    org_id: uuid.UUID
    role: Role
    memberships: list[MembershipOut]


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256)
