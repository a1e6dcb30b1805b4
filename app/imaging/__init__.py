"""Pure functions over Pillow, by concern: `validate` (decoding and checking an upload),
`metadata` (EXIF, colours) and `render` (renditions). Nothing here knows about Flask, the
database or storage."""
