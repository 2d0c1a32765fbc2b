"""The oplog: archiving it into slices, the $v:2 update diff, and replaying entries onto a server."""
