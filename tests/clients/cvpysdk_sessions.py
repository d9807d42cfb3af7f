"""Drives sessiond with Commvault's own Python SDK (cvpysdk), as a user would.

Environment: SESSIOND_URL (http://127.0.0.1:PORT), ADMIN_PASSWORD, USER2, USER2_PASSWORD.
Prints one JSON document with what it saw; exits non-zero if an expectation fails.
"""
import json
import os
import sys

from cvpysdk.commcell import Commcell
from cvpysdk.exception import SDKException

base = os.environ["SESSIOND_URL"]
web_service = base + "/commandcenter/api"
user2 = os.environ["USER2"]


def commcell(user, password):
    return Commcell("127.0.0.1", user, password, web_service_url=web_service)


admin = commcell("admin", os.environ["ADMIN_PASSWORD"])
second = commcell(user2, os.environ["USER2_PASSWORD"])

admin_sessions = admin.users.get("admin").get_sessions()
# The second user sees their own sessions; the admin sees them too.
own_sessions = second.users.get(user2).get_sessions()
seen_by_admin = admin.users.get(user2).get_sessions()

# A plain user may not look at the admin.
denied = False
try:
    from cvpysdk.security.user import User
    User(second, "admin", admin.users.get("admin").user_id).get_sessions()
except SDKException:
    denied = True

logout_reply = second.logout()
after_logout = admin.users.get(user2).get_sessions()
admin_logout = admin.logout()

result = {
    "admin_sessions": admin_sessions,
    "own_sessions": own_sessions,
    "seen_by_admin": seen_by_admin,
    "plain_user_denied_admin": denied,
    "logout_reply": logout_reply,
    "after_logout": after_logout,
    "admin_logout": admin_logout,
}
print(json.dumps(result))

checks = [
    (len(admin_sessions) == 1, "admin has one live session"),
    (admin_sessions[0]["user"]["userName"] == "admin", "session belongs to admin"),
    (admin_sessions[0]["logoutTime"] == 0, "admin session is live"),
    (admin_sessions[0]["host"] == "127.0.0.1", "host is the client address"),
    (admin_sessions[0]["consoleType"] == 13, "cvpysdk counts as the command line"),
    (len(own_sessions) == 1 and own_sessions[0]["user"]["userName"] == user2, "second user sees own session"),
    ([s["sessionId"] for s in seen_by_admin] == [s["sessionId"] for s in own_sessions], "admin sees the same session"),
    (denied, "plain user cannot read the admin"),
    (logout_reply == "User logged out", "logout reply"),
    (after_logout == [], "logged-out session is no longer active"),
]
failed = [msg for ok, msg in checks if not ok]
if failed:
    print("FAILED: " + "; ".join(failed), file=sys.stderr)
    sys.exit(1)
