"""Typed dependencies for what the device service builds in its lifespan (``request.state``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from nattery_device.mqtt.credentials import PasswordFile
from nattery_device.settings import DeviceSettings

if TYPE_CHECKING:
    from nattery_device.commands.service import CommandService
    from nattery_device.devices.registry import RegistryCache
    from nattery_shared.outbox import OutboxRelay


def get_passwords(request: Request) -> PasswordFile:
    passwords: PasswordFile = request.state.passwords
    return passwords


def get_device_settings(request: Request) -> DeviceSettings:
    settings: DeviceSettings = request.state.settings
    return settings


def get_commands(request: Request) -> CommandService:
    commands: CommandService = request.state.commands
    return commands


def get_relay(request: Request) -> OutboxRelay:
    relay: OutboxRelay = request.state.relay
    return relay


def get_registry(request: Request) -> RegistryCache:
    registry: RegistryCache = request.state.registry
    return registry


PasswordsDep = Annotated[PasswordFile, Depends(get_passwords)]
SettingsDep = Annotated[DeviceSettings, Depends(get_device_settings)]
CommandsDep = Annotated["CommandService", Depends(get_commands)]
RegistryDep = Annotated["RegistryCache", Depends(get_registry)]
RelayDep = Annotated["OutboxRelay", Depends(get_relay)]
