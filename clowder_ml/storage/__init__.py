"""Blob storage: content-addressed by sha256."""

from clowder_ml.storage.blobstore import BlobInfo, BlobStore, BlobWriter, LocalBlobStore

__all__ = ["BlobInfo", "BlobStore", "BlobWriter", "LocalBlobStore"]
