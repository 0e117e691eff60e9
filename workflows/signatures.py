"""Deterministic alert scoring: known-bad signatures over alert fields, and source severities.

A :class:`Signature` is a matcher over an :class:`~secfm.workflows.alerts.Alert` that returns
the fields it rests on (or None), a 0-100 score, the ATT&CK techniques it implies and the next
steps it recommends. :func:`score_alert` combines them:

    score = max(best signature, source severity, 10)
            + 5 for each other matched signature scoring 40 or more (at most +15)
            + 5 when the technique source (the classifier head) confirms a rule technique (>= 0.6)

capped at 100, and bucketed by :func:`~secfm.workflows.schemas.severity_for_score`
(85 critical, 65 high, 40 medium, 20 low).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from secfm.workflows.alerts import Alert

Matcher = Callable[[Alert], "list[str] | None"]

CMDLINE = ("CommandLine", "command_line", "process.command_line", "ProcessCommandLine", "cmdline", "commandLine",
           "process.args", "ScriptBlockText", "command", "ParentCommandLine", "cmd", "exe", "a0", "a1", "a2",
           "ImagePath", "ServiceFileName", "TaskContent", "details")
EVENT_ID = ("EventID", "EventCode", "event_id", "event.code")
COUNT = ("count", "event_count", "EventCount", "attempts", "failure_count", "FailureCount", "failed_attempts", "occurrences", "hits")
USER = ("TargetUserName", "user", "userName", "username", "SubjectUserName", "user.name", "AccountName")


# --------------------------------------------------------------------------------------------
# matchers
# --------------------------------------------------------------------------------------------
def fam(*families: str) -> Matcher:
    return lambda a: [] if a.family in families else None


def eq(names: Sequence[str], *values: str) -> Matcher:
    wanted = {v.lower() for v in values}

    def match(a: Alert):
        key = a.key(*names)
        return [key] if key is not None and a.fields[key].strip().lower() in wanted else None

    return match


def rx(names: Sequence[str] | None, pattern: str) -> Matcher:
    """``pattern`` (case-insensitive) found in one of the named fields, or in any field."""
    compiled = re.compile(pattern, re.IGNORECASE)

    def match(a: Alert):
        keys = [a.key(n) for n in names] if names else list(a.fields)
        for key in dict.fromkeys(k for k in keys if k is not None):
            if compiled.search(a.fields[key]):
                return [key]
        return None

    return match


def num_ge(names: Sequence[str], n: float) -> Matcher:
    def match(a: Alert):
        key = a.key(*names)
        if key is None:
            return None
        try:
            return [key] if float(a.fields[key]) >= n else None
        except ValueError:
            return None

    return match


def key_rx(pattern: str) -> Matcher:
    """``pattern`` found in a field's name (its flattened path)."""
    compiled = re.compile(pattern, re.IGNORECASE)

    def match(a: Alert):
        for key in a.fields:
            if compiled.search(key):
                return [key]
        return None

    return match


def path_value(path_pattern: str, value_pattern: str) -> Matcher:
    """A field whose path matches ``path_pattern`` and whose value matches ``value_pattern``."""
    p, v = re.compile(path_pattern, re.IGNORECASE), re.compile(value_pattern, re.IGNORECASE)

    def match(a: Alert):
        for key, value in a.fields.items():
            if p.search(key) and v.search(value):
                return [key]
        return None

    return match


def all_(*ms: Matcher) -> Matcher:
    def match(a: Alert):
        keys: list[str] = []
        for m in ms:
            got = m(a)
            if got is None:
                return None
            keys.extend(got)
        return list(dict.fromkeys(keys))

    return match


def any_(*ms: Matcher) -> Matcher:
    def match(a: Alert):
        for m in ms:
            got = m(a)
            if got is not None:
                return got
        return None

    return match


def not_(m: Matcher) -> Matcher:
    return lambda a: [] if m(a) is None else None


def cmd(pattern: str) -> Matcher:
    return rx(CMDLINE + ("message",), pattern)


def event(*ids: str) -> Matcher:
    return eq(EVENT_ID, *ids)


def ct(*names: str) -> Matcher:
    return all_(fam("cloudtrail"), eq(("eventName",), *names))


def suricata_sig(pattern: str) -> Matcher:
    return all_(fam("suricata"), eq(("event_type",), "alert"), rx(("alert.signature", "alert.category", "signature", "category"), pattern))


def _dga(a: Alert):
    key = a.key("query", "dns.rrname", "rrname", "dns.query")
    if key is None:
        return None
    label = a.fields[key].split(".")[0].lower()
    if not 12 <= len(label) < 30 or not label.isalnum():
        return None
    counts = {c: label.count(c) for c in set(label)}
    entropy = -sum(n / len(label) * math.log2(n / len(label)) for n in counts.values())
    vowels = sum(label.count(v) for v in "aeiou") / len(label)
    return [key] if entropy > 3.5 and vowels < 0.3 else None


def _dns_tunnel(a: Alert):
    """A DNS query whose first label is a long encoded-looking string (data in the name)."""
    key = a.key("query", "dns.rrname", "rrname", "dns.query")
    if key is None:
        return None
    labels = a.fields[key].split(".")
    longest = max(labels, key=len) if labels else ""
    if len(longest) >= 30 and re.fullmatch(r"[A-Za-z0-9+/=_-]+", longest) and sum(c.isdigit() for c in longest) + sum(c.isupper() for c in longest) >= 4:
        return [key]
    return None


def _access_key_for_other(a: Alert):
    target = a.get("requestParameters.userName")
    actor = a.get("userIdentity.userName")
    if target and actor and target != actor:
        return [a.key("requestParameters.userName"), a.key("userIdentity.userName")]
    return None


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signature:
    id: str
    title: str
    score: int
    techniques: tuple[str, ...]
    match: Matcher
    steps: tuple[str, ...] = ()
    #: a ceiling on the final score when no other signature of 40+ matched (low-value families
    #: such as IDS scan and policy rules, whatever severity the sensor gave them)
    cap: int | None = None


def S(id: str, title: str, score: int, techniques: str, match: Matcher, *steps: str, cap: int | None = None) -> Signature:  # noqa: N802
    return Signature(id, title, score, tuple(techniques.split()), match, steps, cap)


_WIN = fam("windows")
_BURST = num_ge(COUNT, 10)
_ADMIN_GROUP = rx(("TargetUserName", "GroupName", "Group", "group", "TargetSid", "MemberName"), r"admin|S-1-5-32-544|domain admins|enterprise admins|schema admins")

SIGNATURES: tuple[Signature, ...] = (
    # ---- Windows security / Sysmon -----------------------------------------------------------
    S("WIN-LOG-CLEARED", "Windows audit log cleared", 80, "T1070.001", all_(_WIN, event("1102", "104")),
      "Confirm who cleared the log (SubjectUserName) and whether a change ticket covers it",
      "Pull the host's forwarded events from the SIEM for the hours before the clear",
      "Review other activity of the same account and host"),
    S("WIN-LOGON-FAILED", "Failed Windows logon", 25, "T1110", all_(_WIN, event("4625", "4771", "4776")),
      "Check the source address and the targeted account for other failures or a later success"),
    S("WIN-LOGON-FAILED-BURST", "Burst of failed Windows logons", 65, "T1110", all_(_WIN, event("4625", "4771", "4776"), _BURST),
      "Look for a successful logon (4624) from the same source after the failures",
      "Consider blocking the source address at the perimeter",
      "Check whether the account is locked out and notify its owner"),
    S("WIN-LOCKOUT", "Account locked out", 45, "T1110", all_(_WIN, event("4740")),
      "Find the caller computer that produced the bad passwords and check it for brute forcing or stale credentials"),
    S("WIN-USER-CREATED", "User account created", 50, "T1136.001", all_(_WIN, event("4720")),
      "Confirm the new account with its requester; disable it if no one owns it"),
    S("WIN-GROUP-ADD", "Member added to a security group", 45, "T1098", all_(_WIN, event("4728", "4732", "4756")),
      "Confirm the membership change with the group owner"),
    S("WIN-ADMIN-GROUP-ADD", "Member added to an administrators group", 75, "T1098", all_(_WIN, event("4728", "4732", "4756"), _ADMIN_GROUP),
      "Confirm the change with the group owner right away; remove the member if it is not sanctioned",
      "Review what the added account did since the change"),
    S("WIN-SERVICE-INSTALLED", "Service installed", 50, "T1543.003", all_(_WIN, event("4697", "7045")),
      "Check the service binary path and signer; compare with the host's software baseline"),
    S("WIN-SUSPICIOUS-SERVICE", "Service installed from a shell or temp path", 80, "T1543.003 T1569.002",
      all_(_WIN, event("4697", "7045"), rx(("ImagePath", "ServiceFileName", "service_file_name"), r"cmd(\.exe)? /c|powershell|%comspec%|\\temp\\|\\users\\public\\|\\appdata\\|\\programdata\\[^\\]+\.exe")),
      "Isolation of the host is recommended while the service binary is examined",
      "Collect the service binary and check it against threat intelligence"),
    S("WIN-TASK-CREATED", "Scheduled task created", 45, "T1053.005", all_(_WIN, event("4698")),
      "Check the task's action and author; remove it if it is not sanctioned"),
    S("WIN-SUSPICIOUS-TASK", "Scheduled task running from a user-writable path or a shell", 70, "T1053.005",
      all_(_WIN, event("4698"), rx(("TaskContent",), r"\\users\\public\\|\\appdata\\|\\temp\\|powershell|cmd(\.exe)? /c|mshta|rundll32")),
      "Collect the program the task runs and check it; remove the task if it is not sanctioned"),
    S("WIN-RDP-LOGON", "Remote interactive (RDP) logon", 35, "T1021.001", all_(_WIN, event("4624"), eq(("LogonType", "logon_type"), "10")),
      "Check that the source address and the account are expected to use RDP to this host"),
    S("WIN-LSASS-ACCESS", "Process access to LSASS", 85, "T1003.001",
      all_(_WIN, event("10"), rx(("TargetImage", "target_image"), r"lsass\.exe")),
      "Identify the source process and its parent; isolation of the host is recommended",
      "Reset the credentials of accounts logged on to the host"),
    S("WIN-AMSI-BYPASS", "PowerShell script block with an AMSI bypass or offensive tooling", 85, "T1562.001 T1059.001",
      rx(("ScriptBlockText", "message", "Message"), r"amsiutils|amsiinitfailed|invoke-mimikatz|invoke-shellcode|powersploit|invoke-bloodhound"),
      "Collect the full script block (4104) and the parent process", "Isolation of the host is recommended"),
    # ---- process command lines (Windows 4688 / Sysmon 1 / EDR) -------------------------------
    S("PROC-ENCODED-POWERSHELL", "Encoded PowerShell command", 75, "T1059.001 T1027.010",
      cmd(r"powershell(\.exe)?\b.*\s[-/](e|ec|enc|enco|encod|encode|encoded|encodedc|encodedcommand)\s+[A-Za-z0-9+/=]{12,}|frombase64string"),
      "Decode the command and check what it runs or downloads", "Review the parent process and the user's recent logons"),
    S("PROC-DOWNLOAD-CRADLE", "PowerShell download cradle", 80, "T1059.001 T1105",
      cmd(r"(iex|invoke-expression).*(downloadstring|net\.webclient|invoke-webrequest|iwr |curl )|(downloadstring|downloadfile)\("),
      "Fetch the downloaded URL's content in a sandbox and block the host serving it"),
    S("PROC-MIMIKATZ", "Credential dumping tool (mimikatz)", 95, "T1003.001",
      any_(cmd(r"mimikatz|sekurlsa::|lsadump::|kerberos::(golden|ptt)|privilege::debug"), rx(("Image", "process.name", "OriginalFileName"), r"mimikatz")),
      "Isolation of the host is recommended", "Reset the credentials of every account that logged on to the host",
      "Hunt for the same tool on other hosts"),
    S("PROC-LSASS-DUMP", "LSASS memory dump", 95, "T1003.001",
      cmd(r"procdump.*lsass|comsvcs(\.dll)?[, ]+#?(24|minidump)|rundll32.*comsvcs|lsass.*\.dmp"),
      "Isolation of the host is recommended", "Reset the credentials of accounts logged on to the host"),
    S("PROC-SHADOW-DELETE", "Shadow copies or backups deleted", 90, "T1490",
      cmd(r"vssadmin(\.exe)?\s+delete\s+shadows|wmic(\.exe)?\s+shadowcopy\s+delete|wbadmin(\.exe)?\s+delete\s+catalog|bcdedit.*recoveryenabled\s+no"),
      "Treat as possible ransomware: isolation of the host is recommended", "Check backups of the host are intact and offline"),
    S("PROC-CLEAR-LOGS", "Event logs cleared from the command line", 80, "T1070.001", cmd(r"wevtutil(\.exe)?\s+(cl|clear-log)\b|clear-eventlog"),
      "Find who ran the command and pull the host's forwarded events from the SIEM"),
    S("PROC-CERTUTIL", "certutil used to download or decode", 70, "T1105 T1140", cmd(r"certutil(\.exe)?.*(-urlcache|-decode|-split|-verifyctl)"),
      "Retrieve the downloaded or decoded file and check it"),
    S("PROC-LOLBIN-PROXY", "Signed binary proxy execution", 75, "T1218.010 T1218.005 T1218.011",
      cmd(r"regsvr32.*(/i:\s*https?|scrobj\.dll)|mshta(\.exe)?\s+(https?:|javascript:|vbscript:)|rundll32(\.exe)?\s+javascript:"),
      "Check the script or URL the binary loaded; block it if malicious"),
    S("PROC-DISCOVERY", "Account or system discovery commands", 30, "T1033 T1087 T1082",
      cmd(r"\bwhoami(\.exe)?\b|\bnet1?(\.exe)?\s+(user|group|localgroup)\b(?!.*/add)|\bsysteminfo\b|\bnltest\b|\bquser\b"),
      "Check whether the user normally runs these commands; look for what followed"),
    S("PROC-SCHTASKS", "Scheduled task created from the command line", 50, "T1053.005", cmd(r"schtasks(\.exe)?\s+/create"),
      "Inspect the task's action and trigger"),
    S("PROC-PSEXEC", "Remote execution with PsExec", 55, "T1569.002 T1021.002", cmd(r"\b(psexec|paexec)(64)?(\.exe)?\b"),
      "Confirm the remote execution was administrative work; check the target host"),
    S("PROC-BITSADMIN", "BITS job transfer", 60, "T1197", cmd(r"bitsadmin(\.exe)?.*/(transfer|addfile|create)"),
      "Check the transferred URL and file"),
    S("PROC-RUN-KEY", "Registry Run key persistence", 55, "T1547.001", cmd(r"reg(\.exe)?\s+add.*\\currentversion\\run"),
      "Check the program the Run key starts"),
    S("PROC-RUN-KEY-SUSPICIOUS", "Run key persistence to a user-writable path", 70, "T1547.001",
      cmd(r"reg(\.exe)?\s+add.*\\currentversion\\run.*(\\users\\public\\|\\appdata\\|\\temp\\|\\programdata\\[^\\]+\.exe)"),
      "Collect the program the Run key starts and check it; remove the key if it is not sanctioned"),
    S("PROC-OFFICE-CHILD", "Office application spawned a shell or script host", 80, "T1204.002",
      all_(rx(("ParentProcessName", "ParentImage", "process.parent.name", "parent_process"), r"(winword|excel|powerpnt|outlook|onenote|msaccess|mspub)(\.exe)?$"),
           rx(("NewProcessName", "Image", "process.name", "CommandLine"), r"powershell|\bcmd(\.exe)?\b|wscript|cscript|mshta|rundll32|regsvr32|certutil|bitsadmin")),
      "Find the document that ran the macro and who else received it", "Isolation of the host is recommended while the child process is examined"),
    S("PROC-DEFENDER-OFF", "Antivirus protection disabled", 80, "T1562.001",
      cmd(r"set-mppreference.*-disable(realtimemonitoring|behaviormonitoring|ioavprotection)\s+\$?true|sc(\.exe)?\s+(stop|config)\s+windefend|add-mppreference.*-exclusionpath"),
      "Re-enable protection and find out who disabled it"),
    S("PROC-NET-USER-ADD", "Local user added from the command line", 55, "T1136.001", cmd(r"net1?(\.exe)?\s+user\s+\S+\s+\S*\s*/add"),
      "Confirm the account with its requester"),
    S("PROC-NET-ADMIN-ADD", "User added to local administrators from the command line", 75, "T1098",
      cmd(r"net1?(\.exe)?\s+localgroup\s+\"?administrators\"?\s+\S+\s+/add"),
      "Remove the membership if it is not sanctioned; review the account's activity"),
    # ---- Linux syslog / auditd ---------------------------------------------------------------
    S("SSH-AUTH-FAILED", "SSH authentication failure", 25, "T1110.001", eq(("ssh_result",), "failed", "invalid user"),
      "Check the source address for other failures or a later successful login"),
    S("SSH-AUTH-FAILED-BURST", "Burst of SSH authentication failures", 65, "T1110.001", all_(eq(("ssh_result",), "failed", "invalid user"), _BURST),
      "Consider blocking the source address (fail2ban or the perimeter firewall)", "Check for a later successful login from the same source"),
    S("SSH-ROOT-LOGIN", "Successful SSH login as root", 50, "T1078.003", all_(eq(("ssh_result",), "accepted"), eq(("user",), "root")),
      "Confirm the root login was expected; prefer named accounts with sudo"),
    S("SUDO-FAILED", "sudo authentication failure", 30, "T1548.003",
      all_(rx(("program",), r"^sudo$"), rx(("message", "problem"), r"authentication failure|incorrect password|not in the sudoers")),
      "Check with the user; repeated failures may be a compromised account probing for privileges"),
    S("SUDO-SHELL", "sudo to a root shell", 35, "T1548.003", rx(("command",), r"^(/usr)?/bin/(ba|z|da)?sh\b|\bsu\b\s*(-|root)?$"),
      "Confirm the root shell was part of sanctioned administration"),
    S("LINUX-USER-ADDED", "Local Linux user created", 50, "T1136.001", any_(all_(rx(("program",), r"useradd|adduser"), rx(("message",), r"new user")), cmd(r"\buseradd\b|\badduser\b")),
      "Confirm the new account with its requester"),
    S("LINUX-UID0-USER", "Local user created with UID 0", 80, "T1136.001",
      any_(rx(("message",), r"new user: .*\buid=0\b"), cmd(r"useradd\s.*(-u\s*0\b|-o\s+-u\s*0)")),
      "A second root account is a classic backdoor: disable it and find who created it"),
    S("LINUX-ADMIN-GROUP", "User added to sudo/wheel group", 70, "T1098",
      any_(cmd(r"usermod\s+.*-a?G\s*\S*\b(sudo|wheel|admin)\b"), rx(("message",), r"add(ed)? '?\S+'? to group '?(sudo|wheel|admin)'?")),
      "Remove the membership if it is not sanctioned"),
    S("LINUX-CRON-DOWNLOAD", "Cron job that downloads or runs a script", 70, "T1053.003 T1105",
      all_(rx(("program",), r"cron"), rx(("message",), r"(curl|wget)\s+\S+.*\|\s*(ba)?sh|/tmp/\S+\.sh")),
      "Inspect the crontab entries of the user and remove unknown jobs"),
    S("LINUX-REVERSE-SHELL", "Reverse shell command", 90, "T1059.004",
      cmd(r"(ba)?sh\s+-i\s*>&\s*/dev/tcp/|/dev/tcp/\d{1,3}(\.\d{1,3}){3}/\d+|\bnc(at)?\b.*\s-e\s+/bin/(ba)?sh|python\d?\s+-c\s+.*socket.*subprocess|mkfifo\s+/tmp/\S+.*\bnc\b"),
      "Isolation of the host is recommended", "Identify the process tree and the remote address; block the address"),
    S("LINUX-CURL-PIPE-SHELL", "Download piped to a shell", 70, "T1105 T1059.004", cmd(r"(curl|wget)\s[^|]*\|\s*(sudo\s+)?(ba)?sh\b"),
      "Retrieve the downloaded script and check what it did"),
    S("LINUX-LOG-TAMPER", "Shell history or system logs cleared", 75, "T1070.003 T1070.002",
      cmd(r"history\s+-c|unset\s+histfile|histfile=/dev/null|rm\s+(-\w+\s+)*\S*(\.bash_history|/var/log/\S+)|shred\s+.*(/var/log|\.bash_history)|>\s*/var/log/(auth|secure|syslog|messages)"),
      "Preserve what remains of the logs and pull the forwarded copies from the SIEM"),
    S("LINUX-KERNEL-MODULE", "Kernel module loaded by hand", 50, "T1547.006", cmd(r"\b(insmod|modprobe)\s+\S+\.ko\b"),
      "Check the module's origin and signature"),
    S("NET-SCAN-TOOL", "Network scanner run", 40, "T1046", cmd(r"\b(nmap|masscan|zmap|rustscan)\b"),
      "Confirm the scan was authorised"),
    # ---- AWS CloudTrail -----------------------------------------------------------------------
    S("CT-LOGGING-STOPPED", "CloudTrail logging stopped or deleted", 85, "T1562.008", ct("StopLogging", "DeleteTrail"),
      "Re-enable the trail and find out who stopped it", "Review the identity's other API calls in the same session"),
    S("CT-LOGGING-CHANGED", "CloudTrail trail or event selectors changed", 60, "T1562.008", ct("UpdateTrail", "PutEventSelectors"),
      "Confirm the change; check that management events are still logged"),
    S("CT-DEFENCES-OFF", "Cloud detection or flow logs disabled", 85, "T1562.008 T1562.001",
      ct("DeleteDetector", "DisassociateFromMasterAccount", "DeleteFlowLogs", "StopConfigurationRecorder", "DeleteConfigurationRecorder", "DeleteConfigRule", "DisableSecurityHub"),
      "Re-enable the service and find out who disabled it"),
    S("CT-CONSOLE-LOGIN-FAILED", "Failed AWS console login", 30, "T1110",
      all_(ct("ConsoleLogin"), rx(("responseElements.ConsoleLogin", "errorMessage"), r"failure|failed authentication")),
      "Check the source address and the user for other failures"),
    S("CT-CONSOLE-LOGIN-FAILED-BURST", "Burst of failed AWS console logins", 65, "T1110",
      all_(ct("ConsoleLogin"), rx(("responseElements.ConsoleLogin", "errorMessage"), r"failure|failed authentication"), _BURST),
      "Check for a later successful login and require MFA on the account"),
    S("CT-ROOT-LOGIN", "AWS root account console login", 70, "T1078.004",
      all_(ct("ConsoleLogin"), eq(("userIdentity.type",), "Root"), not_(rx(("responseElements.ConsoleLogin",), r"failure"))),
      "Confirm the root login with the account owner; root should be used only for break-glass tasks"),
    S("CT-ROOT-LOGIN-NO-MFA", "AWS root login without MFA", 85, "T1078.004",
      all_(ct("ConsoleLogin"), eq(("userIdentity.type",), "Root"), eq(("additionalEventData.MFAUsed", "MFAUsed"), "No"), not_(rx(("responseElements.ConsoleLogin",), r"failure"))),
      "Confirm with the account owner now; enable MFA on the root user", "Rotate the root password if the login was not expected"),
    S("CT-ROOT-ACTIVITY", "AWS root account API activity", 65, "T1078.004",
      all_(fam("cloudtrail"), eq(("userIdentity.type",), "Root"), not_(eq(("eventName",), "ConsoleLogin"))),
      "Confirm the root activity with the account owner"),
    S("CT-ACCESS-KEY-CREATED", "IAM access key created", 55, "T1098.001", ct("CreateAccessKey"),
      "Confirm the new key with the user; deactivate it if unexpected"),
    S("CT-ACCESS-KEY-FOR-OTHER", "IAM access key created for another user", 70, "T1098.001", all_(ct("CreateAccessKey"), _access_key_for_other),
      "Deactivate the key unless the owner requested it; review the identity that created it"),
    S("CT-LOGIN-PROFILE", "Console password set for an IAM user", 60, "T1098", ct("CreateLoginProfile", "UpdateLoginProfile"),
      "Confirm the password change with the user"),
    S("CT-USER-CREATED", "IAM user created", 50, "T1136.003", ct("CreateUser"), "Confirm the new user with its requester"),
    S("CT-ADMIN-POLICY", "Administrator policy attached", 80, "T1098.003",
      all_(ct("AttachUserPolicy", "AttachRolePolicy", "AttachGroupPolicy", "PutUserPolicy", "PutRolePolicy", "PutGroupPolicy"),
           rx(("requestParameters.policyArn", "requestParameters.policyDocument"), r"AdministratorAccess|\"Action\"\s*:\s*\"\*\"|IAMFullAccess")),
      "Detach the policy if the change is not sanctioned; review the identity that attached it"),
    S("CT-PUBLIC-BUCKET", "S3 bucket made public", 75, "T1530",
      any_(all_(ct("PutBucketAcl"), rx(None, r"AllUsers|AuthenticatedUsers|public-read")),
           all_(ct("PutBucketPolicy"), any_(rx(None, r"\"Principal\"\s*:\s*(\"\*\"|\{\s*\"AWS\"\s*:\s*\"\*\")"), path_value(r"principal(\.aws)?(\.\d+)?$", r"^\*$"))),
           ct("DeleteBucketPublicAccessBlock", "DeleteAccountPublicAccessBlock")),
      "Restore the public access block and review who read objects since the change"),
    S("CT-SG-OPEN-WORLD", "Security group opened to the internet", 60, "T1562.007",
      all_(ct("AuthorizeSecurityGroupIngress", "ModifySecurityGroupRules"), rx(None, r"0\.0\.0\.0/0|::/0")),
      "Check the opened ports; restrict the rule to known addresses"),
    S("CT-SNAPSHOT-SHARED", "Snapshot or image shared with another account", 75, "T1537",
      all_(ct("ModifySnapshotAttribute", "ModifyDBSnapshotAttribute", "ModifyImageAttribute"),
           any_(rx(None, r"createVolumePermission|restore|launchPermission|\"add\""), key_rx(r"createVolumePermission\.add|launchPermission\.add|valuesToAdd"))),
      "Check the receiving account id against the organisation's accounts; revoke the share if unknown"),
    S("CT-SECRETS-READ", "Secrets read", 30, "T1555.006", ct("GetSecretValue", "BatchGetSecretValue"),
      "Check that the identity normally reads these secrets"),
    S("CT-SECRETS-READ-BURST", "Burst of secret reads", 60, "T1555.006", all_(ct("GetSecretValue", "BatchGetSecretValue", "GetParameter", "GetParameters"), _BURST),
      "Check the identity and rotate the secrets it read if the activity is unexpected"),
    S("CT-ACCESS-DENIED", "Denied cloud API calls", 25, "T1580",
      all_(fam("cloudtrail"), rx(("errorCode",), r"AccessDenied|UnauthorizedOperation|Client\.UnauthorizedOperation")),
      "Check whether the identity is enumerating permissions it does not have"),
    # ---- Suricata EVE ------------------------------------------------------------------------
    S("SURI-MALWARE-C2", "IDS: malware or command-and-control traffic", 80, "T1071",
      suricata_sig(r"malware|trojan|\bcnc\b|c2|command and control|botnet|cobalt\s*strike|beacon"),
      "Identify the internal host and process that made the connection", "Block the remote address and domain"),
    S("SURI-EXPLOIT", "IDS: exploit attempt against a service", 70, "T1190",
      all_(suricata_sig(r"exploit|cve-\d{4}|attempted (administrator|user) privilege gain|web application attack|sql injection|remote code execution"),
           not_(rx(("alert.signature", "signature"), r"\bET (SCAN|POLICY|INFO)\b"))),
      "Check whether the target is vulnerable and whether the request succeeded (response code, follow-on traffic)"),
    S("SURI-SCAN", "IDS: network scan", 30, "T1046", suricata_sig(r"\bscan\b|nmap|masscan|network scan"),
      "Check whether the scan source is an authorised scanner", cap=30),
    S("SURI-POLICY", "IDS: policy or informational rule", 10, "", suricata_sig(r"^(ET|GPL|ETPRO) (POLICY|INFO)\b"),
      "Check the policy rule against the organisation's acceptable-use policy; usually informational", cap=15),
    S("SURI-BRUTE", "IDS: brute-force attempts", 55, "T1110", suricata_sig(r"brute|password guess|login attempts"),
      "Check the targeted service's logs for a successful login"),
    S("SURI-TOR", "IDS: Tor or anonymising proxy", 55, "T1090.003", suricata_sig(r"\btor\b|\.onion|anonymi[sz]"),
      "Identify the internal host using Tor and check whether it is allowed"),
    S("SURI-COINMINER", "IDS: crypto-mining traffic", 60, "T1496", suricata_sig(r"coin ?miner|stratum|xmrig|crypto ?currency mining"),
      "Find and remove the mining process"),
    S("SURI-EXFIL", "IDS: possible data exfiltration", 70, "T1041", suricata_sig(r"exfil"),
      "Check the volume and destination of the transfer"),
    # ---- Zeek --------------------------------------------------------------------------------
    S("ZEEK-SCAN", "Zeek notice: scan", 30, "T1046", all_(fam("zeek"), rx(("note",), r"scan::")),
      "Check whether the scan source is an authorised scanner"),
    S("ZEEK-SSH-GUESSING", "Zeek notice: SSH password guessing", 55, "T1110.001", all_(fam("zeek"), rx(("note",), r"password_guessing")),
      "Check the target's SSH logs for a successful login from the source"),
    S("ZEEK-DGA-DOMAIN", "DNS query for an algorithmically generated-looking domain", 40, "T1568.002", all_(fam("zeek", "suricata", "json"), _dga),
      "Identify the host that made the query and check it for malware"),
    S("ZEEK-C2-PORT", "Connection on a port common for backdoors", 45, "T1571",
      all_(fam("zeek", "suricata"), eq(("id.resp_p", "dest_port", "resp_p"), "4444", "1337", "31337", "6667", "5555", "9001")),
      "Identify the process behind the connection"),
    S("ZEEK-DNS-TUNNEL", "DNS query carrying encoded data (tunnelling)", 60, "T1071.004",
      all_(fam("zeek", "suricata", "json"), _dns_tunnel),
      "Identify the host and process making the queries; block the parent domain if it is not sanctioned"),
    S("ZEEK-HTTP-TOOL-DOWNLOAD", "Executable downloaded by a script tool", 65, "T1105",
      all_(fam("zeek"), rx(("uri",), r"\.(exe|dll|ps1|hta|scr|bat|sh|elf)(\?|$)"), rx(("user_agent",), r"curl|wget|powershell|python|certutil|bitsadmin")),
      "Retrieve the downloaded file and check it"),
    S("ZEEK-LARGE-UPLOAD", "Large upload to an external host", 55, "T1048",
      all_(fam("zeek"), num_ge(("orig_bytes",), 500_000_000)),
      "Identify what was sent and whether the destination is sanctioned"),
    # ---- anywhere ----------------------------------------------------------------------------
    S("KW-RANSOMWARE", "Ransomware indicators", 90, "T1486", rx(None, r"ransom(ware)?\b|your files (have been|are) encrypted|\.(locked|encrypted|crypt)\b.*renamed|readme_for_decrypt"),
      "Isolation of affected hosts is recommended; engage the incident response plan", "Check backups are intact and offline"),
    S("KW-COBALT-STRIKE", "Cobalt Strike indicators", 85, "T1071.001", rx(None, r"cobalt\s*strike|\bbeacon\.(dll|exe)\b|\bcobaltstrike\b"),
      "Isolation of the host is recommended; hunt for the same beacon configuration elsewhere"),
    S("KW-WEBSHELL", "Web shell indicators", 80, "T1505.003", rx(None, r"web\s?shell|china chopper|\.(aspx?|php|jsp)\?(cmd|exec|c)="),
      "Take the web server's files and logs for analysis; remove the shell"),
    S("KW-MALWARE-DETECTED", "Malware detected by a security product", 65, "T1204.002",
      rx(("verdict", "disposition", "classification", "threat.name", "ThreatName", "action", "message", "result"), r"\bmalicious\b|malware (detected|found)|virus found|\btrojan\b|quarantine failed"),
      "Check whether the product blocked the file; collect it and its origin"),
    S("KW-PHISHING", "Phishing indicators", 55, "T1566", rx(None, r"\bphish"), "Find other recipients of the same message and purge it"),
    S("KW-IMPOSSIBLE-TRAVEL", "Impossible travel sign-in", 60, "T1078", rx(None, r"impossible travel|atypical travel"),
      "Confirm the sign-ins with the user; revoke sessions if either is unknown"),
)

SIGNATURES_BY_ID = {s.id: s for s in SIGNATURES}
assert len(SIGNATURES_BY_ID) == len(SIGNATURES), "duplicate signature id"

_LEVEL_WORDS = {"critical": 90, "crit": 90, "emergency": 90, "alert": 80, "high": 70, "severe": 70, "error": 45,
                "medium": 50, "moderate": 50, "warning": 35, "warn": 35, "low": 25, "notice": 15, "info": 10,
                "informational": 10, "debug": 5}


@dataclass(frozen=True)
class SourceSeverity:
    score: int
    field: str
    value: str


def source_severity(alert: Alert) -> SourceSeverity | None:
    """The severity the source itself assigned (Suricata's 1-3, syslog PRI, a severity field)."""
    if alert.family == "suricata":
        key = alert.key("alert.severity")
        if key is not None:
            score = {"1": 70, "2": 50, "3": 30}.get(alert.fields[key].strip(), 40)
            return SourceSeverity(score, key, alert.fields[key])
    if alert.family == "syslog":
        key = alert.key("syslog_severity")
        if key is not None:
            value = alert.fields[key]
            score = {"0": 80, "1": 75, "2": 70, "3": 45, "4": 30}.get(value)
            if score:
                return SourceSeverity(score, key, value)
    for name in ("severity", "level", "priority", "risk", "risk_level", "severity_label", "rule.level"):
        key = alert.key(name)
        if key is None:
            continue
        value = alert.fields[key].strip()
        word = value.lower()
        if word in _LEVEL_WORDS:
            return SourceSeverity(_LEVEL_WORDS[word], key, value)
        try:
            number = float(value)
        except ValueError:
            continue
        if name == "rule.level" or 0 <= number <= 15 and name == "level":  # Wazuh-style 0-15
            return SourceSeverity(int(min(95, number * 6)), key, value)
        if 0 <= number <= 10:
            return SourceSeverity(int(number * 9.5), key, value)
        if 10 < number <= 100:
            return SourceSeverity(int(number), key, value)
    return None


@dataclass
class Scored:
    score: int
    hits: list[tuple[Signature, list[str]]]
    source: SourceSeverity | None
    reasons: list[str]


def match_signatures(alert: Alert) -> list[tuple[Signature, list[str]]]:
    """Signatures matched over the alert's normalised fields (a zero-width or homoglyph inside
    ``mimikatz`` does not hide it); the fields returned are the alert's own names."""
    view, back = alert.normalized()
    hits = []
    for sig in SIGNATURES:
        try:
            keys = sig.match(view)
        except Exception:  # noqa: BLE001 - one odd field must not stop triage
            keys = None
        if keys is not None:
            hits.append((sig, [back.get(k, k) for k in keys]))
    return hits


def score_alert(alert: Alert, head_confidence: float = 0.0, extra: list[tuple[Signature, list[str]]] | None = None) -> Scored:
    """Score one alert (``extra``: signatures matched by batch correlation)."""
    hits = match_signatures(alert) + list(extra or [])
    source = source_severity(alert)
    reasons = []
    score = 10
    top = None
    if hits:
        top = max(hits, key=lambda h: h[0].score)[0]
        score = max(score, top.score)
        reasons.append(f"signature {top.id} ({top.title}) scores {top.score}")
    else:
        reasons.append("no known-bad signature matched")
    if source is not None:
        reasons.append(f"source severity {source.field}={source.value} scores {source.score}")
        score = max(score, source.score)
    others = [s for s, _ in hits if s is not top and s.score >= 40]
    if others:
        bump = min(15, 5 * len(others))
        score += bump
        reasons.append(f"+{bump} for {len(others)} more signature(s): {', '.join(s.id for s in others)}")
    caps = [s.cap for s, _ in hits if s.cap is not None]
    if caps and not any(s.score >= 40 for s, _ in hits):
        if score > min(caps):
            reasons.append(f"capped at {min(caps)} (low-value rule family)")
        score = min(score, min(caps))
    if head_confidence >= 0.6:
        score += 5
        reasons.append(f"+5: the technique head confirms the rules ({head_confidence:.2f})")
    return Scored(min(100, score), hits, source, reasons)


# --------------------------------------------------------------------------------------------
# batch correlation
# --------------------------------------------------------------------------------------------
_FAILURE_SIGS = {"SSH-AUTH-FAILED", "SSH-AUTH-FAILED-BURST", "WIN-LOGON-FAILED", "WIN-LOGON-FAILED-BURST",
                 "CT-CONSOLE-LOGIN-FAILED", "CT-CONSOLE-LOGIN-FAILED-BURST", "ZEEK-SSH-GUESSING", "SURI-BRUTE"}
SOURCE_IP = ("src_ip", "IpAddress", "sourceIPAddress", "src", "id.orig_h", "client_ip", "ipAddress", "source.ip")

CORRELATED_LOGIN = Signature(
    "CORR-LOGIN-AFTER-FAILURES", "Successful login from an address that failed repeatedly in this batch", 90, ("T1110",),
    lambda a: None,
    ("Treat the account as compromised: reset its credentials and review its sessions",
     "Block the source address and look for what the session did"),
)


def _is_success_login(alert: Alert) -> bool:
    if (alert.get("ssh_result") or "").lower() == "accepted":
        return True
    if alert.family == "windows" and alert.get(*EVENT_ID) == "4624" and alert.get("LogonType") in ("3", "10"):
        return True
    if alert.family == "cloudtrail" and alert.get("eventName") == "ConsoleLogin":
        return "fail" not in (alert.get("responseElements.ConsoleLogin") or "").lower()
    return False


def correlate(alerts: Sequence[Alert]) -> dict[int, list[tuple[Signature, list[str]]]]:
    """Signatures that only a batch can show: a successful login from an address that produced
    authentication failures in the same batch. ``{alert index: [(signature, fields)]}``."""
    failing: dict[str, list[str]] = {}
    for a in alerts:
        ids = {s.id for s, _ in match_signatures(a)}
        if ids & _FAILURE_SIGS:
            ip = a.get(*SOURCE_IP)
            if ip:
                techs = [t for s in SIGNATURES if s.id in ids & _FAILURE_SIGS for t in s.techniques]
                failing.setdefault(ip, []).extend(techs)
    out: dict[int, list[tuple[Signature, list[str]]]] = {}
    for a in alerts:
        ip_key = a.key(*SOURCE_IP)
        if ip_key and a.fields[ip_key] in failing and _is_success_login(a):
            techs = tuple(dict.fromkeys(failing[a.fields[ip_key]]))
            sig = Signature(CORRELATED_LOGIN.id, CORRELATED_LOGIN.title, CORRELATED_LOGIN.score, techs, CORRELATED_LOGIN.match, CORRELATED_LOGIN.steps)
            out[a.index] = [(sig, [ip_key])]
    return out
