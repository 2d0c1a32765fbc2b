"""Credentials never reach a message, whatever characters the password holds and whether or not
the URI parses (issue 8, defect 14).

Every password is built from marker words around a reserved character; a marker found in any
surface (message, details, traceback text, target description) is a leak, even a partial one.
"""

import traceback

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ConnectionFailure

RESERVED = ["/", "@", "?", "#", "[", "]", ":", "%", "+", " ", "%zz", "%2F"]
MARKERS = ("Alpha7k", "Omega9q")
# A port nothing listens on: connect() fails fast without a server.
CLOSED = "127.0.0.1:9"


def _password(char):
    return MARKERS[0] + char + MARKERS[1]


def _uri(password, hosts=CLOSED, options="?authSource=admin"):
    return "mongodb://backup:%s@%s/%s" % (password, hosts, options)


def _assert_no_marker(text):
    for marker in MARKERS:
        assert marker not in text, text


def _everything(failure):
    """Every surface a module shows for a failed connection: msg, details and traceback."""
    return "\n".join([failure.message, repr(failure.details),
                      client_utils.redact("".join(traceback.format_exception(failure)),
                                          [])])


def _parses(uri):
    from pymongo.uri_parser import parse_uri
    try:
        parse_uri(uri)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("char", RESERVED)
def test_redact_removes_the_userinfo_of_any_uri_in_a_message(char):
    text = "cannot connect with %s: timed out\nnext line keeps mongodb://plain-host:1/ as is" % _uri(
        _password(char))
    redacted = client_utils.redact(text)
    _assert_no_marker(redacted)
    assert "mongodb://********@%s/" % CLOSED in redacted
    assert "mongodb://plain-host:1/" in redacted


@pytest.mark.parametrize("char", RESERVED)
def test_known_secrets_are_removed_in_every_form(char):
    options = client_utils.ConnectionOptions(uri=_uri(_password(char)))
    password = _password(char)
    # The driver may quote the raw password, or its percent- or plus-decoded form.
    for form in (password, password.replace("+", " "), password.replace("%2F", "/")):
        _assert_no_marker(client_utils.redact("auth failed for %r" % form, options.secrets))


@pytest.mark.parametrize("char", RESERVED)
def test_describe_target_shows_hosts_only(char):
    options = client_utils.ConnectionOptions(uri=_uri(_password(char), hosts="db1:27017,db2:27017"))
    assert options.describe_target() == "db1:27017,db2:27017"


def test_the_reserved_characters_cover_uris_that_parse_and_uris_that_do_not():
    parsed = [char for char in RESERVED if _parses(_uri(_password(char)))]
    assert set(parsed) >= {"#", "[", "]", "+", " ", "%2F"}
    assert set(RESERVED) - set(parsed) >= {"/", "@", "?", ":", "%", "%zz"}


@pytest.mark.parametrize("char", RESERVED)
def test_connect_failure_never_quotes_the_password(char):
    options = client_utils.ConnectionOptions(uri=_uri(_password(char)), connect_timeout=0.2)
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(options)
    _assert_no_marker(_everything(failure.value))
    assert CLOSED in failure.value.message


@pytest.mark.parametrize("char", ["/", "@", "?", ":", "%"])
def test_unescaped_password_is_named_as_the_cause(char):
    options = client_utils.ConnectionOptions(uri=_uri(_password(char)), connect_timeout=0.2)
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(options)
    message = failure.value.message
    assert message.startswith("malformed connection settings for %s: the user name or password" % CLOSED)
    assert "quote_plus" in message and "login_password" in message


def test_every_reserved_character_at_once():
    password = "Alpha7k/@?#[]:%+ Omega9q"
    options = client_utils.ConnectionOptions(uri=_uri(password), connect_timeout=0.2)
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(options)
    _assert_no_marker(_everything(failure.value))
    _assert_no_marker(client_utils.redact("x %s y" % _uri(password)))


def test_a_malformed_option_is_reported_with_pymongo_cause_but_no_password():
    """The credentials are fine, an option is not: the driver's cause is useful and shown."""
    options = client_utils.ConnectionOptions(uri=_uri(_password("/"), options="?replicaSet="),
                                             connect_timeout=0.2)
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(options)
    _assert_no_marker(_everything(failure.value))


def test_an_unknown_option_names_the_option_not_the_password():
    options = client_utils.ConnectionOptions(uri=_uri(_password("?"), options="?notAnOption=1"),
                                             connect_timeout=0.2)
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(options)
    _assert_no_marker(_everything(failure.value))


def test_srv_uri_with_unescaped_password():
    uri = "mongodb+srv://backup:%s@cluster0.example.invalid/?retryWrites=true" % _password("/")
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(client_utils.ConnectionOptions(uri=uri, connect_timeout=0.2))
    _assert_no_marker(_everything(failure.value))
    assert "cluster0.example.invalid" in failure.value.message


def test_an_at_sign_in_the_options_of_a_valid_uri_keeps_the_hosts():
    options = client_utils.ConnectionOptions(uri="mongodb://db1:27017,db2:27018/?appname=ops@example")
    assert options.describe_target() == "db1:27017,db2:27018"


# --------------------------------------------------------------------------- the module glue

def _run_module(capsys, params, error):
    """MongoDBModule.run with an engine function that raises ``error``; the JSON it printed."""
    import json
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import MongoDBModule

    def engine():
        raise error

    with patch_module_args(dict(params, _ansible_tracebacks_for=["error"])):
        module = MongoDBModule(argument_spec={})
        with pytest.raises(SystemExit):
            module.run(engine)
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("char", RESERVED)
def test_unexpected_error_and_its_traceback_never_quote_the_uri_password(capsys, char):
    uri = _uri(_password(char))
    result = _run_module(capsys, {"uri": uri}, ValueError("boom while using %s" % uri))
    assert result["failed"] and result["msg"].startswith("unexpected error: boom while using mongodb://********@")
    assert "Traceback" in result["exception"] and "boom while using mongodb://********@" in result["exception"]
    _assert_no_marker(repr(result))


def test_a_stall_outside_the_engine_steps_is_not_an_unexpected_error(capsys):
    from pymongo.errors import NetworkTimeout
    result = _run_module(capsys, {"login_host": "db1"}, NetworkTimeout("db1:27017: timed out"))
    assert result["msg"].startswith("the server stopped answering (no reply within socket_timeout: "
                                    "NetworkTimeout: db1:27017: timed out)"), result["msg"]
