from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class RegistrationConfig:
    name: str = "none"


ConfigStore.instance().store(group="registration", name="base_registration", node=RegistrationConfig)
