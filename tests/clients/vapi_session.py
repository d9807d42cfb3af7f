"""Drives sessiond with VMware's own vAPI Python runtime, as a user would:
`com.vmware.cis_client.Session` over the JSON-RPC connector at /api.

Environment: SESSIOND_URL (http://127.0.0.1:PORT), ADMIN_PASSWORD.
Prints one JSON document with what it saw; exits non-zero if an expectation fails.
"""
import json
import os

import requests
from com.vmware.cis_client import Session, Tasks
from com.vmware.vapi.std.errors_client import OperationNotFound, Unauthenticated
from vmware.vapi.lib.connect import get_requests_connector
from vmware.vapi.security.session import create_session_security_context
from vmware.vapi.security.user_password import create_user_password_security_context
from vmware.vapi.stdlib.client.factories import StubConfigurationFactory

connector = get_requests_connector(
    session=requests.Session(), url=os.environ["SESSIOND_URL"] + "/api"
)
config = StubConfigurationFactory.new_std_configuration(connector)
password = os.environ["ADMIN_PASSWORD"]


def raises(error_class, call):
    """The error `call` raised, which must be an `error_class`."""
    try:
        call()
    except error_class as e:
        return e
    raise AssertionError("expected %s" % error_class.__name__)


# A wrong password is Unauthenticated, and says nothing about which part was wrong.
connector.set_security_context(create_user_password_security_context("admin@local", "wrong"))
bad_login = raises(Unauthenticated, lambda: Session(config).create())

connector.set_security_context(create_user_password_security_context("admin@local", password))
session_id = Session(config).create()
assert isinstance(session_id, str) and len(session_id) == 64, session_id

connector.set_security_context(create_session_security_context(session_id))
info = Session(config).get()
assert info.user == "admin@local", info
assert info.created_time <= info.last_accessed_time, info

# Another service is not there: the runtime raises OperationNotFound.
not_found = raises(OperationNotFound, lambda: Tasks(config).get("task-1"))

# A second session, left open for the test to inspect.
connector.set_security_context(create_user_password_security_context("admin", password))
open_session = Session(config).create()

connector.set_security_context(create_session_security_context(session_id))
assert Session(config).delete() is None
after_delete = raises(Unauthenticated, lambda: Session(config).get())
delete_again = raises(Unauthenticated, lambda: Session(config).delete())

print(json.dumps({
    "session_id": session_id,
    "open_session": open_session,
    "user": info.user,
    "created_time": info.created_time.isoformat(),
    "bad_login": {"error_type": bad_login.error_type,
                  "message_id": bad_login.messages[0].id},
    "unknown_operation": not_found.messages[0].id,
    "after_delete": {"error_type": after_delete.error_type,
                     "message_id": after_delete.messages[0].id},
    "delete_again": delete_again.messages[0].id,
}))
