#!/bin/sh
# Runs in the job's sandbox as the job user: shows the token it was given (its claims, never
# the token itself) and the file the https plugin fetched with it.
echo "I am $(id -un), running in $PWD"
echo "_CONDOR_CREDS=$_CONDOR_CREDS"
ls -l "$_CONDOR_CREDS"
echo "The token's claims:"
python3 - "$_CONDOR_CREDS/scitokens.use" <<'PY'
import base64, json, sys, time
token = json.load(open(sys.argv[1]))["access_token"]
claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
for k in ("iss", "sub", "aud", "scope", "exp"):
    print(f"  {k:5} = {claims.get(k)}")
print(f"  (expires in {int(claims['exp'] - time.time())} s)")
PY
if [ -f hello.txt ]; then
  echo "The file the https plugin read from storage with that token (hello.txt):"
  sed 's/^/  /' hello.txt
else
  echo "(no storage server: no file was read)"
fi
