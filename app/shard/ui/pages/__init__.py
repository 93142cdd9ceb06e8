"""The dashboard's pages; each has `refresh(snapshot)`, called about once a second while it is visible."""
