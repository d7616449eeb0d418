"""Operational records: client API keys."""

import hashlib
import secrets

from django.db import models, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

KEY_PREFIX = "ngw_"


def hash_key(raw: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw.encode("utf-8", errors="surrogatepass")).hexdigest()


class ApiKey(models.Model):
    """A client API key issued in the admin; only its hash is stored."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="First characters, to tell keys apart"
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def set_new_secret(self) -> str:
        """Give this (unsaved) key a fresh secret and return it; only its hash is kept."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        self.prefix = raw[:12]
        self.key_hash = hash_key(raw)
        return raw

    @classmethod
    def issue(cls, name: str) -> tuple["ApiKey", str]:
        """Create a key and return it with the raw secret, which is never stored."""
        key = cls(name=name)
        raw = key.set_new_secret()
        key.save()
        return key, raw

    @classmethod
    def revoke_all(cls, queryset) -> int:
        """Revoke the still-active keys of `queryset`; returns how many were revoked."""
        from .auth import forget_cached_keys

        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        # This process refuses them at once; the others within auth.KEY_LOOKUP_SECONDS.
        forget_cached_keys()
        return count


@receiver(post_save, sender=ApiKey)
@receiver(post_delete, sender=ApiKey)
def _keys_changed(sender, **kwargs):
    # The first issued key must lock the API at once in every process, not after a cache TTL.
    # Again after commit: a request that read the table just before it would re-cache "none".
    from .auth import forget_cached_keys

    forget_cached_keys()
    transaction.on_commit(forget_cached_keys)
