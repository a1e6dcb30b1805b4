"""Database models: the canonical data. Everything else (files aside) is derived from it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app import search_schema
from app.extensions import db

ROLES = ("admin", "member", "viewer")
SCOPES = ("read", "write", "admin")
IMAGE_STATUSES = ("pending", "processing", "ready", "error")


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_utc(text: str) -> datetime:
    """The moment an ISO 8601 text with a time zone names, in UTC, as stored; ValueError when
    it has no time zone, or names no UTC time (0001-01-01T00:00:00+05:00 parses, but its UTC
    time falls before the years datetime can hold)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} has no UTC time") from None


class UTCDateTime(db.TypeDecorator):
    """Timezone-aware UTC datetimes on every database (SQLite stores naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use app.models.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class TeamOwned:
    """Rows that belong to one team. The tenancy layer confines every query of them."""

    team_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("team.id", ondelete="CASCADE"), index=True
    )


class Team(db.Model):
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(UserMixin, db.Model):
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )


class Membership(db.Model):
    __table_args__ = (UniqueConstraint("user_id", "team_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("user.id", ondelete="CASCADE"))
    team_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("team.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships")
    team: Mapped[Team] = relationship()


class ApiKey(TeamOwned, db.Model):
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("user.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_ip: Mapped[str | None] = mapped_column(String(45))
    rotated_from_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("api_key.id", ondelete="SET NULL")
    )

    created_by: Mapped[User | None] = relationship()


class LoginSession(db.Model):
    """One browser login. The session cookie names it; logging out or changing the password
    revokes it, so a copied cookie stops working even though Flask's cookie is still signed.
    It also ends by itself: unused for the idle lifetime, or older than the absolute one."""

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("user.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Written at most once a minute (accounts.TOUCH_INTERVAL), not on every request.
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Invite(TeamOwned, db.Model):
    """A link that lets one email address join a team with a role, until it expires."""

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(10))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("user.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    team: Mapped[Team] = relationship()


class AuditEvent(TeamOwned, db.Model):
    """Who did what to which object, from where and when. Rows are only ever added.

    A team's events (`team_id` set) are actions taken in that team, read by its admins. A
    person's own events (sign-ins, failed sign-ins, logouts, password changes) have no team:
    `user_id` names the account they concern (empty for an email no account has), and only
    that person and operators read them, never the teams the person belongs to.
    """

    __table_args__ = (
        Index("ix_audit_event_team_id_desc", "team_id", "id"),
        Index("ix_audit_event_user_id_desc", "user_id", "id"),
    )

    team_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("team.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("user.id", ondelete="CASCADE")
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(10))  # user | key | system | anonymous
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("user.id", ondelete="SET NULL")
    )
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("api_key.id", ondelete="SET NULL")
    )
    # What the actor was called then (an email, `key <prefix> (<name>)`): kept when it is gone.
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(50), index=True)
    target_type: Mapped[str | None] = mapped_column(String(30))
    target_id: Mapped[str | None] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(300))
    ip: Mapped[str | None] = mapped_column(String(45))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Collection(TeamOwned, db.Model):
    """A team's named set of images; an image is in at most one (`Image.collection_id`).

    `name` is shown as the team wrote it (spaces collapsed); `name_key` is what makes two names
    the same ("Summer", " summer ", "ＳＵＭＭＥＲ"), unique in the team. `updated_at` is when the
    name or description last changed.
    """

    __table_args__ = (
        UniqueConstraint("team_id", "name_key"),
        # What an image's (team_id, collection_id) refers to: an image can only be in a
        # collection of its own team, whatever a service does.
        UniqueConstraint("team_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    # Case-folded NFKC: compatibility forms and case folding can lengthen a name.
    name_key: Mapped[str] = mapped_column(String(400))
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Image(TeamOwned, db.Model):
    __table_args__ = (
        UniqueConstraint("team_id", "sha256"),
        # The gallery and the API list a team's images newest first.
        Index("ix_image_team_created", "team_id", "created_at", "id"),
        # No ON DELETE action: the database refuses to delete a collection that still holds
        # an image ("delete only when empty"), even one added while the delete was deciding.
        # Checked at the end of the statement (not RESTRICT's at once), so deleting a team
        # removes its collections and images together whichever its cascades reach first.
        ForeignKeyConstraint(
            ["team_id", "collection_id"],
            ["collection.team_id", "collection.id"],
            name="fk_image_collection_id_collection",
        ),
        # A collection's images newest first (the list filter), its image count, and the
        # check above when a collection is deleted.
        Index("ix_image_collection_created", "collection_id", "created_at", "id"),
        # The gallery's counts by status, from the index alone.
        Index("ix_image_team_status", "team_id", "status"),
        # Exact duplicates: images of a team with the same pixels.
        Index("ix_image_team_pixels", "team_id", "pixel_sha256"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    uploaded_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("user.id", ondelete="SET NULL")
    )
    uploaded_by_key_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("api_key.id", ondelete="SET NULL")
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(50))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    storage_key: Mapped[str] = mapped_column(String(255))
    thumbnail_key: Mapped[str] = mapped_column(String(255))
    preview_key: Mapped[str | None] = mapped_column(String(255))  # made by the worker
    collection_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # sha256 of the decoded pixels (upright, full size, canonical mode) with the dimensions,
    # written by processing: the same picture in different bytes has the same one.
    pixel_sha256: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    uploaded_by_user: Mapped[User | None] = relationship()
    uploaded_by_key: Mapped[ApiKey | None] = relationship()
    tags: Mapped[list[Tag]] = relationship(secondary="image_tag", order_by="Tag.name")
    # Written by processing only; the database removes them with the image.
    labels: Mapped[list[Label]] = relationship(
        order_by="(Label.score.desc(), Label.name)",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    @property
    def uploaded_by(self) -> str | None:
        """Who uploaded it, as the API shows it: the person's email, else the key's name."""
        if self.uploaded_by_user is not None:
            return self.uploaded_by_user.email
        return key_uploader(self.uploaded_by_key.name if self.uploaded_by_key else None)

    @property
    def tag_names(self) -> list[str]:
        return [tag.name for tag in self.tags]

    @property
    def label_scores(self) -> list[tuple[str, float]]:
        return [(label.name, label.score) for label in self.labels]


def key_uploader(key_name: str | None) -> str | None:
    """An image's `uploaded_by` when an API key uploaded it."""
    return f"api-key:{key_name}" if key_name is not None else None


class Tag(TeamOwned, db.Model):
    """A team's tag; names are normalised (NFKC, lower case, single spaces) before storing."""

    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))


class ImageTag(db.Model):
    image_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("image.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Label(TeamOwned, db.Model):
    """What an embedder that names things saw in an image (an ImageNet class, say) and its
    score in 0..1. Processing replaces an embedder's labels whenever it recomputes its vector."""

    __table_args__ = (
        UniqueConstraint("image_id", "embedder", "name"),
        # The team's label names (the gallery's label filter), from the index alone.
        Index("ix_label_team_name", "team_id", "name"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    image_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("image.id", ondelete="CASCADE"))
    embedder: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(100))
    score: Mapped[float] = mapped_column(Float)


class DirectUpload(TeamOwned, db.Model):
    """A presigned upload: the client sends the bytes to storage, then asks to complete it.

    Its id becomes the image's id on completion; an upload never completed is cleaned up
    after it expires.
    """

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(50))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(255))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Where the image goes on completion. A collection deleted meanwhile (it was empty: this
    # upload is not an image yet) leaves the image in none rather than refusing the bytes.
    collection_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("collection.id", ondelete="SET NULL")
    )
    created_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("user.id", ondelete="SET NULL")
    )
    created_by_key_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("api_key.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ImportBatch(TeamOwned, db.Model):
    """A bulk import from a list of URLs; each URL is an ImportItem fetched by a worker."""

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("user.id", ondelete="SET NULL")
    )
    created_by_key_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("api_key.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    total: Mapped[int] = mapped_column(Integer)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Where its images go; like a direct upload's, cleared if the collection is deleted first.
    collection_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("collection.id", ondelete="SET NULL")
    )

    items: Mapped[list[ImportItem]] = relationship(
        back_populates="batch", order_by="ImportItem.position", cascade="all, delete-orphan"
    )


class ImportItem(TeamOwned, db.Model):
    __table_args__ = (Index("ix_import_item_batch_position", "batch_id", "position"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("import_batch.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(String(255))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(10), default="queued")  # queued|done|failed
    image_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("image.id", ondelete="SET NULL")
    )
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    batch: Mapped[ImportBatch] = relationship(back_populates="items")
    image: Mapped[Image | None] = relationship()


class Embedding(TeamOwned, db.Model):
    """One image's vector from one embedder version: the source of truth for every index.

    Ids only grow (a recomputed vector is a new row), so an index build records the highest id
    it holds as its watermark and search scans the rows above it exactly. When an embedder's
    version changes, an image holds a row of each version until the index of the new version
    is published: searches answer from the old version's index (and its rows) until then.
    """

    __table_args__ = (
        UniqueConstraint("image_id", "embedder", "version"),
        Index("ix_embedding_team_embedder_id", "team_id", "embedder", "id"),
        # Without it SQLite hands the newest row's id out again once that row is deleted.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    image_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("image.id", ondelete="CASCADE"))
    embedder: Mapped[str] = mapped_column(String(50))
    version: Mapped[str] = mapped_column(String(20))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IndexBuild(TeamOwned, db.Model):
    """One built version of a (team, embedder) index. Searches read the highest version built
    for the embedder's current version, or, while none is, the highest of an older one."""

    __table_args__ = (UniqueConstraint("team_id", "embedder", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedder: Mapped[str] = mapped_column(String(50))
    embedder_version: Mapped[str] = mapped_column(String(20))
    index_kind: Mapped[str] = mapped_column(String(50))
    version: Mapped[int] = mapped_column(Integer)
    item_count: Mapped[int] = mapped_column(Integer)
    storage_keys: Mapped[list[str]] = mapped_column(JSON)
    watermark: Mapped[int] = mapped_column(BigInteger)
    built_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # From reading the embeddings to publishing; None for builds recorded before it was kept.
    build_seconds: Mapped[float | None] = mapped_column(Float)


class DuplicateDecision(TeamOwned, db.Model):
    """Two images of a team someone said are not duplicates: every later duplicate run keeps
    them apart, whatever else joins their group. Stored as an ordered pair (the smaller id
    first), so a pair is one row; it goes with either image."""

    __table_args__ = (UniqueConstraint("image_a_id", "image_b_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    image_a_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("image.id", ondelete="CASCADE"))
    image_b_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("image.id", ondelete="CASCADE"), index=True
    )
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImageSearch(TeamOwned, db.Model):
    """The words an image is found by (filename, tags, labels, collection name): written by
    database triggers whenever one of them changes, and indexed by the database's full-text
    search (`app/search_schema.py`). Services only read it."""

    __tablename__ = "image_search"

    # The FTS5 index refers to documents by this integer, which SQLite keeps through VACUUM.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    image_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("image.id", ondelete="CASCADE"), unique=True
    )
    document: Mapped[str] = mapped_column(Text, default="")


search_schema.attach(db.metadata)
