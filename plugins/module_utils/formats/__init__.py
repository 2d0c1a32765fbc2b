"""What a backup is on disk: BSON streams, compression, the mongodump directory and archive layouts, the manifest."""
