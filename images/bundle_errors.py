"""The errors of update bundles, shared by ``images.update_bundle`` (making and checking a
bundle) and ``images.bundle_verity`` (checking a verity bundle's payload)."""

from __future__ import annotations

from edge.errors import InputError


class BundleInputError(InputError):
    """What was given to make a bundle cannot make one: not an ext4 image, a bad field value."""


class BundleRefusedError(InputError):
    """A bundle failed a check a device would make; nothing was written or installed."""


class BundleSignatureError(BundleRefusedError):
    """The bundle's signature does not verify against the keyring (another CA, altered)."""


class BundleCompatibleError(BundleRefusedError):
    """The bundle is meant for other devices (its ``compatible`` string differs)."""


class BundleDamagedError(BundleRefusedError):
    """The bundle is truncated, or its payload does not match what its signature covers."""
