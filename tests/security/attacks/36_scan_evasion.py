"""Code built to slip past the static scan: ``exec`` fetched by a computed name, imports by
computed names, and a base64-encoded payload. It is still contained: the payload tries the
network, the host's files and its environment from inside.

verdict: ok
"""
import base64

ex = getattr(__builtins__, "ex" + "ec")
imp = getattr(__builtins__, "__imp" + "ort__")
payload = base64.b64decode(base64.b64encode(b"""
sock = imp('so' + 'cket')
o = imp('o' + 's')
e = o.environ
res = []
try:
    sock.create_connection(('127.0.0.1', int(e['TCP_PORT'])), timeout=1)
    res.append('ESCAPED: network')
except OSError as x:
    res.append('net blocked %s' % x.errno)
for p in (e['BLOB_PATH'], e['CANARY_DIR'] + '/host-canary.txt', '/etc/shadow'):
    try:
        res.append(open(p).read())
        res.append('ESCAPED: read ' + p)
    except OSError as x:
        res.append('read blocked %s' % x.errno)
try:
    open(e['CANARY_DIR'] + '/' + e['MARKER'] + '-evasion', 'w').write('x')
    res.append('ESCAPED: wrote a host file')
except OSError as x:
    res.append('write blocked %s' % x.errno)
if e['SECRET_ENV_NAME'] in e:
    res.append('ESCAPED: host environment')
print(res)
"""))
ex(payload.decode(), {"imp": imp, "print": print, "open": open, "OSError": OSError,
                      "int": int})
ev = getattr(__builtins__, "ev" + "al")
print(ev("1 + 1"))
print("COMPLETE")
