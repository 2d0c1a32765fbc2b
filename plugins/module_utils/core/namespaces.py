# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Namespaces (``database.collection``): the name rules and mongorestore's patterns, defined once.

Dump, restore, the oplog replay and the dump layout import what they need from here:

* the name rules: what MongoDB and its tools accept as a database or a collection name;
* ``split_namespace``: a namespace's database and collection (the first ``.`` separates them);
* ``NamespacePattern``: one ``ns_include``/``ns_exclude`` pattern, as mongorestore's
  ``--nsInclude``/``--nsExclude``;
* ``NamespaceRenamer``: the ``ns_from``/``ns_to`` rules, as mongorestore's ``--nsFrom``/``--nsTo``.

Pattern syntax, as mongorestore reads it (mongo-tools ``mongorestore/ns``, confirmed with the
real ``mongorestore --dryRun -v``):

* A ``*`` that does not follow a backslash is a wildcard: it matches any run of characters, dots
  included, as short as the rest of the pattern allows. The pattern must match the whole
  namespace: ``shop.*`` matches ``shop.orders`` and ``shop.x.y``, ``shop*`` matches
  ``shopx.orders`` too, and a bare ``shop`` matches nothing at all (we refuse it).
* In the literal text ``\\\\`` is a backslash, ``\\*`` an asterisk; any other backslash is dropped.
* ``ns_from`` may name parts with ``$variables$`` instead (``$name$``, the name may be empty);
  ``ns_to`` puts them back (``sales.$coll$`` -> ``archive.$coll$``). In a rule whose ``ns_from``
  holds a ``$``, ``*`` and ``\\`` are plain characters on both sides. A variable appears once in
  ``ns_from``; ``ns_to`` may use each any number of times, or not at all.
* Without variables, ``ns_to`` has as many wildcards as ``ns_from`` and takes their text in order.
* When several rules match a namespace, the LAST one in the list renames it.
* ``$`` is refused in ``ns_include``/``ns_exclude``.

Where mongorestore stays silent we refuse, naming the rule: a rename rule that matches none of
the namespaces being restored, or only ones a later rule renames; a pattern that cannot match
any namespace; a rename whose target is not a valid namespace, or that sends two namespaces to
the same target; and a wildcard rule where only one side starts with ``*`` (mongorestore then
pairs the wildcards out of order: ``sh*.*`` -> ``*.*`` renames ``shop.orders`` to ``orders.op``).
Every rule we accept renames exactly as mongorestore does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    InvalidOption,
    NamespaceNotFound,
)

# Characters MongoDB refuses in a database name (the tools' rule; Windows servers refuse more).
INVALID_DATABASE_CHARACTERS = '/\\. "$\x00'
MAX_DATABASE_NAME_BYTES = 63
# Characters refused in a collection name ("$" is the server's own, e.g. index namespaces).
INVALID_COLLECTION_CHARACTERS = "$\x00"
DATABASE_NAME_RULE = ("a database name is 1 to %d bytes and holds none of / \\ . space \" $ or NUL"
                      % MAX_DATABASE_NAME_BYTES)
COLLECTION_NAME_RULE = "a collection name is not empty and holds neither $ nor NUL"
# How many namespaces an error message lists before saying "and N more".
LISTED_NAMESPACES = 30

# config.* is left out of dumps and replays except these (mongo-tools common/dumprestore).
KEPT_CONFIG_COLLECTIONS = frozenset(("chunks", "collections", "databases", "settings", "shards", "tags",
                                     "version"))


# --------------------------------------------------------------------------- names

def split_namespace(namespace):
    """(database, collection) of ``db.collection``: the first dot separates them."""
    database, _dot, collection = (namespace or "").partition(".")
    return database, collection


def join_namespace(database, collection):
    return "%s.%s" % (database, collection)


def database_name_problem(name):
    """Why ``name`` cannot be a database name, or None when it can."""
    if not name:
        return "it is empty"
    if len(name.encode("utf-8")) > MAX_DATABASE_NAME_BYTES:
        return "it is %d bytes long" % len(name.encode("utf-8"))
    bad = [char for char in INVALID_DATABASE_CHARACTERS if char in name]
    if bad:
        return "it contains %s" % " and ".join(_show_char(char) for char in bad)
    return None


def collection_name_problem(name):
    """Why ``name`` cannot be a collection name, or None when it can."""
    if not name:
        return "it is empty"
    bad = [char for char in INVALID_COLLECTION_CHARACTERS if char in name]
    if bad:
        return "it contains %s" % " and ".join(_show_char(char) for char in bad)
    return None


def namespace_problem(namespace):
    """Why ``namespace`` cannot be a ``database.collection`` namespace, or None when it can."""
    database, collection = split_namespace(namespace)
    problem = database_name_problem(database)
    if problem:
        return "its database part %r is not a valid database name: %s (%s)" % (
            database, problem, DATABASE_NAME_RULE)
    problem = collection_name_problem(collection)
    if problem:
        return "its collection part %r is not a valid collection name: %s (%s)" % (
            collection, problem, COLLECTION_NAME_RULE)
    return None


def check_database_option(option, value):
    """Refuse an option value that cannot be a database name (before anything connects)."""
    if value is None:
        return
    problem = database_name_problem(value)
    if problem:
        raise InvalidOption("%s %r is not a valid database name: %s; %s" % (
            option, value, problem, DATABASE_NAME_RULE))


def check_collection_option(option, value):
    """Refuse an option value that cannot be a collection name (before anything connects)."""
    if value is None:
        return
    problem = collection_name_problem(value)
    if problem:
        raise InvalidOption("%s %r is not a valid collection name: %s; %s" % (
            option, value, problem, COLLECTION_NAME_RULE))


def _show_char(char):
    return {" ": "a space", "\x00": "a NUL character"}.get(char, repr(char))


def listing(namespaces):
    """Namespaces for an error message, shortened past LISTED_NAMESPACES."""
    names = sorted(namespaces)
    if not names:
        return "none"
    shown = ", ".join(names[:LISTED_NAMESPACES])
    if len(names) > LISTED_NAMESPACES:
        shown += " and %d more" % (len(names) - LISTED_NAMESPACES)
    return shown


# --------------------------------------------------------------------------- pattern text

class _Slot:
    """A part of a pattern that matches any text: a wildcard or a $variable$."""

    def __init__(self, name):
        self.name = name


def _unescape(text):
    """mongorestore's unescaping: ``\\\\`` -> ``\\``, ``\\*`` -> ``*``, any other backslash dropped."""
    out, index = [], 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            following = text[index + 1:index + 2]
            if following in ("\\", "*"):
                out.append(following)
                index += 2
            else:
                index += 1
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _wildcard_parts(text):
    """Literal text and wildcard slots of a pattern without ``$``: a ``*`` is a wildcard unless a
    backslash comes right before it; the literal text between wildcards is then unescaped."""
    parts, literal, wildcards = [], [], 0
    for index, char in enumerate(text):
        if char == "*" and (index == 0 or text[index - 1] != "\\"):
            parts.append(_unescape("".join(literal)))
            parts.append(_Slot(wildcards))  # wildcards pair up by position
            wildcards += 1
            literal = []
        else:
            literal.append(char)
    parts.append(_unescape("".join(literal)))
    return [part for part in parts if part != ""]


def _variable_parts(text):
    """Literal text and ``$name$`` slots of a pattern that holds ``$`` (no escapes, ``*`` literal).
    The caller has checked that the dollar signs pair up."""
    parts, literal, index = [], [], 0
    while index < len(text):
        if text[index] == "$":
            end = text.index("$", index + 1)
            parts.append("".join(literal))
            parts.append(_Slot(text[index + 1:end]))
            literal = []
            index = end + 1
        else:
            literal.append(text[index])
            index += 1
    parts.append("".join(literal))
    return [part for part in parts if part != ""]


def _regex(parts):
    """A regex matching a whole namespace; each slot is a group, as short as the match allows."""
    return re.compile("".join("(.*?)" if isinstance(part, _Slot) else re.escape(part) for part in parts),
                      re.DOTALL)


def _spelled_out_database(parts):
    """The database part when the pattern spells it out before any slot, else None."""
    if parts and not isinstance(parts[0], _Slot) and "." in parts[0]:
        return parts[0].split(".", 1)[0]
    return None


def _can_match_a_namespace(parts):
    """A namespace always has a dot: a pattern without a slot or a literal dot never matches one."""
    return any(isinstance(part, _Slot) or "." in part for part in parts)


# --------------------------------------------------------------------------- include / exclude

class NamespacePattern:
    """One ``ns_include``/``ns_exclude`` pattern, as mongorestore's ``--nsInclude``/``--nsExclude``."""

    def __init__(self, text, option):
        self.text = text
        self.option = option
        if not isinstance(text, str) or not text:
            raise self._invalid("it is empty")
        if "$" in text:
            raise self._invalid("'$' is not allowed in %s (as mongorestore); write '*' for any text"
                                % option)
        parts = _wildcard_parts(text)
        if not _can_match_a_namespace(parts):
            raise self._invalid("it has neither a '.' nor a '*', so it matches no namespace (mongorestore "
                                "would silently restore nothing for it); for a whole database write '%s.*'"
                                % text)
        database = _spelled_out_database(parts)
        problem = database_name_problem(database) if database is not None else None
        if problem:
            raise self._invalid("its database part %r can match no database: %s (%s)"
                                % (database, problem, DATABASE_NAME_RULE))
        self.regex = _regex(parts)

    def _invalid(self, cause):
        return InvalidOption("%s pattern %r is invalid: %s; a pattern has the form <database>.<collection> "
                             "where * matches any text and \\* is a literal asterisk, e.g. 'sales.*' or "
                             "'*.orders'" % (self.option, self.text, cause))

    def matches(self, namespace):
        return self.regex.fullmatch(namespace) is not None


def matches_any(patterns, namespace):
    """True when one of the patterns matches (mongorestore's Matcher.Has)."""
    return any(pattern.matches(namespace) for pattern in patterns)


# --------------------------------------------------------------------------- renames

class RenameRule:
    """One ``ns_from``/``ns_to`` pair: a regex over the source and a template for the target."""

    def __init__(self, source, target):
        self.source = source
        self.target = target
        self.label = "ns_from %r (ns_to %r)" % (source, target)
        if not isinstance(source, str) or not source:
            raise InvalidOption("%s: ns_from is empty; give a pattern like 'sales.*'" % self.label)
        if "$" in source:
            source_parts, target_parts = self._variable_rule()
        else:
            source_parts, target_parts = self._wildcard_rule()
        if not _can_match_a_namespace(source_parts):
            raise InvalidOption("%s: ns_from has neither a '.' nor a '*' nor a $variable$, so it matches no "
                                "namespace; for a whole database write e.g. 'sales.*' -> 'archive.*'"
                                % self.label)
        self.regex = _regex(source_parts)
        groups = dict((part.name, number + 1) for number, part in
                      enumerate(p for p in source_parts if isinstance(p, _Slot)))
        self.template = [groups[part.name] if isinstance(part, _Slot) else part for part in target_parts]

    def _variable_rule(self):
        for option, text in (("ns_from", self.source), ("ns_to", self.target)):
            if text.count("$") % 2:
                raise InvalidOption("%s: %s has an odd number of '$'; a $variable$ is written between two "
                                    "dollar signs, e.g. ns_from 'sales.$coll$' ns_to 'archive.$coll$'"
                                    % (self.label, option))
        source_parts = _variable_parts(self.source)
        target_parts = _variable_parts(self.target)
        names = [part.name for part in source_parts if isinstance(part, _Slot)]
        for name in names:
            if names.count(name) > 1:
                raise InvalidOption("%s: ns_from uses $%s$ more than once; each variable may appear only "
                                    "once in ns_from" % (self.label, name))
        for part in target_parts:
            if isinstance(part, _Slot) and part.name not in names:
                raise InvalidOption("%s: ns_to uses $%s$, which ns_from does not define (it defines %s)"
                                    % (self.label, part.name,
                                       ", ".join("$%s$" % n for n in names) or "none"))
        return source_parts, target_parts

    def _wildcard_rule(self):
        if "$" in self.target:
            raise InvalidOption("%s: ns_to uses '$' but ns_from has no $variable$; use $variables$ on both "
                                "sides ('sales.$coll$' -> 'archive.$coll$') or * on both sides "
                                "('sales.*' -> 'archive.*')" % self.label)
        source_parts = _wildcard_parts(self.source)
        target_parts = _wildcard_parts(self.target)
        wildcards = len([p for p in source_parts if isinstance(p, _Slot)])
        target_wildcards = len([p for p in target_parts if isinstance(p, _Slot)])
        if wildcards != target_wildcards:
            raise InvalidOption("%s: ns_from has %d wildcard(s) and ns_to %d; each * of ns_from needs its * "
                                "in ns_to, in the same order (write \\* for a literal asterisk)"
                                % (self.label, wildcards, target_wildcards))
        if wildcards >= 2 and self.source.startswith("*") != self.target.startswith("*"):
            # mongorestore numbers a leading * first and the others from the right, so the pairs
            # cross when only one side starts with *; rather than copy that, refuse the rule.
            raise InvalidOption("%s: only one of the two starts with *, and with several wildcards "
                                "mongorestore then pairs them out of order (e.g. 'sh*.*' -> '*.*' sends "
                                "shop.orders to orders.op); name the parts with $variables$ instead, e.g. "
                                "ns_from 'sh$a$.$b$' ns_to '$a$.$b$'" % self.label)
        return source_parts, target_parts

    def apply(self, namespace):
        """The target of ``namespace`` under this rule, or None when the rule does not match."""
        match = self.regex.fullmatch(namespace)
        if match is None:
            return None
        return "".join(match.group(part) if isinstance(part, int) else part for part in self.template)

    def matches(self, namespace):
        return self.regex.fullmatch(namespace) is not None


class NamespaceRenamer:
    """``ns_from``/``ns_to`` rules, as mongorestore's ``--nsFrom``/``--nsTo``: the last matching
    rule renames a namespace; a namespace no rule matches keeps its name."""

    def __init__(self, sources, targets):
        sources, targets = list(sources or []), list(targets or [])
        if len(sources) != len(targets):
            raise InvalidOption("ns_from has %d pattern(s) and ns_to %d: they pair up in order, give one "
                                "ns_to for each ns_from" % (len(sources), len(targets)))
        self.rules = [RenameRule(source, target) for source, target in zip(sources, targets)]

    def rule_for(self, namespace):
        """The rule that renames ``namespace`` (the last one that matches), or None."""
        for rule in reversed(self.rules):
            if rule.matches(namespace):
                return rule
        return None

    def rename(self, namespace):
        rule = self.rule_for(namespace)
        return namespace if rule is None else rule.apply(namespace)

    def check(self, selected, available=()):
        """Refuse rules that rename nothing, before anything is written.

        ``selected``: the source namespaces being restored; ``available``: every namespace of the
        source, listed in the message when a rule matches none of the selected ones.
        """
        for rule in self.rules:
            matched = [namespace for namespace in selected if rule.matches(namespace)]
            if not matched:
                left_out = [namespace for namespace in available
                            if rule.matches(namespace) and namespace not in selected]
                why = ""
                if left_out:
                    why = (" (it matches only namespaces that db, collection, ns_include or ns_exclude leave "
                           "out: %s)" % listing(left_out))
                raise NamespaceNotFound(
                    "%s matches none of the namespaces being restored%s; the source has: %s; fix the "
                    "pattern (* matches any text, \\* is a literal asterisk) or remove the rule"
                    % (rule.label, why, listing(available or selected)))
            if not any(self.rule_for(namespace) is rule for namespace in matched):
                later = self.rule_for(matched[0])
                raise InvalidOption(
                    "%s never applies: every namespace it matches (%s) is renamed by the later rule %s, "
                    "because when several rules match, the last one wins (as mongorestore); put the more "
                    "specific rule last" % (rule.label, listing(matched), later.label))


def check_targets(pairs):
    """Refuse a restore plan whose targets are not valid namespaces, or that writes two source
    namespaces into one target. ``pairs``: (source namespace, target namespace)."""
    sources_by_target = {}
    for source, target in pairs:
        problem = namespace_problem(target)
        if problem:
            raise InvalidOption("the restore would write %s into %s, which is not a valid namespace: %s; "
                                "fix ns_from/ns_to or db" % (source, target, problem))
        sources_by_target.setdefault(target, []).append(source)
    for target, sources in sorted(sources_by_target.items()):
        if len(sources) > 1:
            raise InvalidOption("the restore would write %s all into %s, mixing their documents (and, with "
                                "drop: true, each would drop the one before it); give them distinct "
                                "targets in ns_from/ns_to" % (listing(sources), target))
