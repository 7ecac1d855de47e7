"""Read the platform's database and blob folder by their host paths, directly and through
/proc and traversal.

verdict: ok
"""
import os
import sqlite3

data = os.environ["DATA_DIR"]
paths = [f"{data}/clowder-ml.sqlite3", os.environ["BLOB_PATH"], data, f"{data}/blobs",
         f"/proc/1/root{data}/clowder-ml.sqlite3", f"/proc/self/cwd/../..{data}/blobs",
         f"/work/../..{os.environ['BLOB_PATH']}"]
for p in paths:
    try:
        if os.path.isdir(p):
            print(p, "lists", os.listdir(p))
            print("ESCAPED: listed", p)
            continue
        raw = open(p, "rb").read()
        print(p, "->", raw[:300])
        print("ESCAPED: read", p)
    except OSError as e:
        print(p, "->", type(e).__name__, e.errno)
try:
    db = sqlite3.connect(f"file:{data}/clowder-ml.sqlite3?mode=ro", uri=True)
    print(db.execute("SELECT * FROM secret").fetchall())
    print("ESCAPED: queried the platform database")
except sqlite3.Error as e:
    print("sqlite:", e)
print("COMPLETE")
