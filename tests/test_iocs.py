"""IOC extraction, refanging and defanging (secfm.text.iocs, secfm.text.defang)."""

from __future__ import annotations

import dataclasses

import pytest

from secfm.text.defang import defang, refang, refang_with_offsets
from secfm.text.iocs import FILE_EXTENSION_TLDS, TLDS, Ioc, extract_iocs, ioc_kinds, unique_iocs


def found(text: str, refang: bool = True) -> list[tuple[str, str]]:
    return [(ioc.kind, ioc.value) for ioc in extract_iocs(text, refang=refang)]


def values(text: str, kind: str) -> list[str]:
    return [ioc.value for ioc in extract_iocs(text) if ioc.kind == kind]


# --------------------------------------------------------------------------- API and spans


def test_kinds_and_ioc_shape():
    assert ioc_kinds() == ("ipv4", "ipv6", "domain", "url", "email", "md5", "sha1", "sha256",
                           "cve", "cwe", "attack", "windows_path", "posix_path", "registry_key")
    ioc = extract_iocs("c2 at 10.0.0.1")[0]
    assert ioc == Ioc("ipv4", "10.0.0.1", "10.0.0.1", 6, 14, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ioc.value = "x"  # type: ignore[misc]


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "nothing to see here."])
def test_no_iocs(text):
    assert extract_iocs(text) == []
    assert unique_iocs(extract_iocs(text)) == {}


def test_raw_and_offsets_point_into_the_original_text():
    text = "Beacon hxxps[:]//evil[.]com/a to 10[.]0[.]0[.]1 from user[@]example[.]org; e\u200bvil.net"
    iocs = extract_iocs(text)
    assert [ioc.kind for ioc in iocs] == ["url", "ipv4", "email", "domain"]
    for ioc in iocs:
        assert text[ioc.start : ioc.end] == ioc.raw
    assert [ioc.defanged for ioc in iocs] == [True, True, True, False]  # zero-width is no defang
    assert iocs == sorted(iocs, key=lambda i: i.start)


def test_unique_iocs_dedups_in_first_seen_order_and_kind_order():
    text = "evil.com 1.2.3.4 EVIL.com evil[.]com 5.6.7.8 1.2.3.4 CVE-2021-44228 cve-2021-44228"
    assert unique_iocs(extract_iocs(text)) == {
        "ipv4": ["1.2.3.4", "5.6.7.8"],
        "domain": ["evil.com"],
        "cve": ["CVE-2021-44228"],
    }


# --------------------------------------------------------------------------- defanged forms


@pytest.mark.parametrize(("text", "expected"), [
    ("hxxp://evil[.]com/a", ("url", "http://evil.com/a")),
    ("hXXps://evil[.]com/a", ("url", "https://evil.com/a")),
    ("HXXPS[://]evil(.)com", ("url", "https://evil.com")),
    ("hxxps[:]//evil{.}com/x", ("url", "https://evil.com/x")),
    ("fxp://files[.]evil[.]org/p.bin", ("url", "ftp://files.evil.org/p.bin")),
    ("hxxp://evil[.]com[/]gate.php", ("url", "http://evil.com/gate.php")),
    ("10[.]0[.]0[.]1", ("ipv4", "10.0.0.1")),
    ("1.2.3[.]4", ("ipv4", "1.2.3.4")),
    ("10(.)0(.)0(.)1:4444", ("ipv4", "10.0.0.1:4444")),
    ("evil[dot]com", ("domain", "evil.com")),
    ("evil [dot] com", ("domain", "evil.com")),
    ("user[@]example[.]org", ("email", "user@example.org")),
    ("user [at] example [dot] org", ("email", "user@example.org")),
    ("user(at)example(dot)org", ("email", "user@example.org")),
    ("2001[:]db8[:][:]1", ("ipv6", "2001:db8::1")),
])
def test_defanged_forms(text, expected):
    iocs = extract_iocs(text)
    assert [(i.kind, i.value) for i in iocs] == [expected]
    assert iocs[0].defanged and iocs[0].raw == text


def test_refang_false_keeps_defanged_values_as_written():
    text = "hxxp://Evil[.]com and 10[.]0[.]0[.]1 and plain Evil.NET"
    assert found(text, refang=False) == [
        ("url", "hxxp://Evil[.]com"), ("ipv4", "10[.]0[.]0[.]1"), ("domain", "evil.net")]


def test_refang():
    assert refang("hxxps://evil[.]com/a and 10[.]0[.]0[.]1") == "https://evil.com/a and 10.0.0.1"
    assert refang("a [at] b [dot] c") == "a@b.c"
    assert refang("x\u200by\ufeffz\u00ad") == "xyz"
    assert refang("plain text (with parens) [and brackets]") == "plain text (with parens) [and brackets]"
    assert refang("hxxp alone stays") == "hxxp alone stays"


def test_refang_offsets_map_back():
    r = refang_with_offsets("go hxxp://a[.]b\u200b.c now")
    assert r.text == "go http://a.b.c now"
    start = r.text.index("http")
    end = r.text.index(" now")
    assert r.to_original(start, end) == (3, 18)
    assert r.defanged(start, end)
    assert not r.defanged(0, 2)


def test_defang():
    text = ("go to http://evil.com/a.php or 1.2.3.4:80 or [2001:db8::1]:443 or ::1, "
            "mail bob@evil.co.uk about evil.net")
    defanged = defang(text)
    assert defanged == (
        "go to hxxp://evil[.]com/a.php or 1[.]2[.]3[.]4:80 or [2001[:]db8[:][:]1]:443 or "
        "[:][:]1, mail bob[@]evil[.]co[.]uk about evil[.]net")
    assert refang(defanged) == text
    assert defang(defanged) == defanged  # idempotent
    assert not any(ioc.kind in {"url", "domain", "ipv4", "ipv6", "email"}
                   and not ioc.defanged for ioc in extract_iocs(defanged))


def test_defang_leaves_other_kinds_and_text_alone():
    text = "CVE-2021-44228 in /opt/app/log4j.jar, sha d41d8cd98f00b204e9800998ecf8427e, T1190."
    assert defang(text) == text
    assert defang("https://x.com:8443/a.b?c=d.e") == "hxxps://x[.]com:8443/a.b?c=d.e"
    assert defang("ftps://x.org/f") == "fxps://x[.]org/f"


# --------------------------------------------------------------------------- IPv4


@pytest.mark.parametrize(("text", "expected"), [
    ("1.2.3.4", ["1.2.3.4"]),
    ("0.0.0.0 255.255.255.255", ["0.0.0.0", "255.255.255.255"]),
    ("host 192.168.1.1.", ["192.168.1.1"]),
    ("1.1.1.1,8.8.8.8;9.9.9.9", ["1.1.1.1", "8.8.8.8", "9.9.9.9"]),
    ("10.0.0.5:8080", ["10.0.0.5:8080"]),
    ("10.0.0.5:65535", ["10.0.0.5:65535"]),
    ("10.0.0.5:65536", ["10.0.0.5"]),  # invalid port: the address alone
    ("10.0.0.5:0", ["10.0.0.5"]),
    ("10.0.0.0/8", ["10.0.0.0"]),
    ("**1.2.3.4**", ["1.2.3.4"]),
    ("`1.2.3.4`", ["1.2.3.4"]),
    ("(1.2.3.4)", ["1.2.3.4"]),
    ("999.1.1.1", []),
    ("256.1.1.1 1.256.1.1 1.1.1.256", []),
    ("01.2.3.4 1.2.3.04 010.0.0.1", []),  # leading zeros: could be octal
    ("1.2.3.4.5", []),  # a version string, not an address
    ("v1.2.3.4 build_1.2.3.4", []),
    ("1.2.3", []),
    ("1.2.3.4a", []),
])
def test_ipv4(text, expected):
    assert values(text, "ipv4") == expected


# --------------------------------------------------------------------------- IPv6


@pytest.mark.parametrize(("text", "expected"), [
    ("::1", ["::1"]),
    ("2001:db8::1", ["2001:db8::1"]),
    ("2001:DB8:0:0:0:0:0:1", ["2001:db8::1"]),
    ("[2001:db8::1]:443", ["[2001:db8::1]:443"]),
    ("[2001:db8::1]", ["2001:db8::1"]),
    ("fe80::1%eth0", ["fe80::1"]),
    ("::ffff:192.0.2.1", ["::ffff:c000:201"]),
    ("listen on 2001:db8::1.", ["2001:db8::1"]),
    ("12:30:45", []),
    ("00:1a:2b:3c:4d:5e", []),  # a MAC address
    ("std::vector abc::def ::", []),
    ("2001:db8::1::2 2001:db8:::1", []),
])
def test_ipv6(text, expected):
    assert values(text, "ipv6") == expected


def test_ipv4_inside_ipv6_is_not_reported_twice():
    assert found("::ffff:10.0.0.1") == [("ipv6", "::ffff:a00:1")]


# --------------------------------------------------------------------------- domains


def test_file_names_are_not_domains():
    text = "invoice.pdf cmd.exe svchost.exe config.json lib.dll a.docx x.ps1 y.vbs z.hta tar.gz"
    assert extract_iocs(text) == []


@pytest.mark.parametrize("name", ["payload.zip", "video.mov", "setup.py", "run.sh", "README.md",
                                  "main.rs", "bot.pl", "libc.so", "main.tf"])
def test_file_extension_tlds_need_defanging(name):
    assert values(name, "domain") == []
    defanged = name.replace(".", "[.]")
    assert values(defanged, "domain") == [name.lower()]


def test_file_extension_tlds_in_url_email_or_www():
    assert found("https://evil.zip/a") == [("url", "https://evil.zip/a")]
    assert found("x@files.zip") == [("email", "x@files.zip")]
    assert found("www.evil.zip") == [("domain", "www.evil.zip")]


def test_tld_lists():
    assert {"com", "org", "net", "io", "ru", "cn", "xyz", "top", "onion", "local"} <= TLDS
    assert FILE_EXTENSION_TLDS <= TLDS
    assert not {"exe", "dll", "pdf", "json", "docx", "php", "bat", "js", "txt"} & TLDS


@pytest.mark.parametrize(("text", "expected"), [
    ("evil.com", ["evil.com"]),
    ("Sub.Evil-Site.CO.UK.", ["sub.evil-site.co.uk"]),
    ("xn--80ak6aa92e.com", ["xn--80ak6aa92e.com"]),
    ("(evil.com), \"evil.net\" <evil.org> evil.com's", ["evil.com", "evil.net", "evil.org", "evil.com"]),
    ("abc.onion corp.local", ["abc.onion", "corp.local"]),
    ("logging.info(msg) obj.method()", []),
    ("e.g. i.e. U.S.A. Node.js", []),
    ("-evil.com", ["evil.com"]),
    ("evil-.com foo..com", []),
    ("a" * 64 + ".com", []),  # a label longer than 63
    ("evil.com_x", []),
])
def test_domains(text, expected):
    assert values(text, "domain") == expected


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(("text", "expected"), [
    ("see https://x.com/a.", ["https://x.com/a"]),
    ("(see https://x.com/a)", ["https://x.com/a"]),
    ("https://en.wikipedia.org/wiki/Foo_(bar)", ["https://en.wikipedia.org/wiki/Foo_(bar)"]),
    ("<https://x.com>", ["https://x.com"]),
    ("[link](https://x.com/a?b=1)", ["https://x.com/a?b=1"]),
    ("[https://x.com/a](https://x.com/a)", ["https://x.com/a", "https://x.com/a"]),
    ("**https://x.com/a**", ["https://x.com/a"]),
    ('"https://x.com/a", \'https://y.com/b\'', ["https://x.com/a", "https://y.com/b"]),
    ("https://x.com/a,https://y.com/b", ["https://x.com/a", "https://y.com/b"]),
    ("https://x.com/a?b=1,2;c=3!", ["https://x.com/a?b=1,2;c=3"]),
    ("HTTP://Evil.COM/Path?Q=1#F", ["http://evil.com/Path?Q=1#F"]),
    ("https://user:pw@host.example.com:8443/x", ["https://user:pw@host.example.com:8443/x"]),
    ("http://[2001:db8::1]:8080/x", ["http://[2001:db8::1]:8080/x"]),
    ("ftp://files.example.org/pub/", ["ftp://files.example.org/pub/"]),
    ("http://intranet/wiki", ["http://intranet/wiki"]),
    ("http:// https://... xhttp://a.com", []),
])
def test_urls(text, expected):
    assert values(text, "url") == expected


def test_url_swallows_its_host_ip_and_path_parts():
    text = "http://10.0.0.1:8080/x?u=a@b.com&h=d41d8cd98f00b204e9800998ecf8427e then 10.0.0.1"
    assert found(text) == [
        ("url", "http://10.0.0.1:8080/x?u=a@b.com&h=d41d8cd98f00b204e9800998ecf8427e"),
        ("ipv4", "10.0.0.1"),
    ]


# --------------------------------------------------------------------------- e-mail


@pytest.mark.parametrize(("text", "expected"), [
    ("mail Bob.Smith+x@Example.COM.", ["Bob.Smith+x@example.com"]),
    ("mailto:admin@corp.local", ["admin@corp.local"]),
    ("a@b.c user@host user@evil.exe", []),
])
def test_email(text, expected):
    assert values(text, "email") == expected


def test_email_domain_not_reported_separately_unless_it_appears_alone():
    assert found("from bob@evil.com") == [("email", "bob@evil.com")]
    assert found("from bob@evil.com via evil.com") == [("email", "bob@evil.com"), ("domain", "evil.com")]


# --------------------------------------------------------------------------- hashes

MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_hashes():
    text = f"md5 {MD5.upper()}, sha1={SHA1} sha256:{SHA256}."
    assert found(text) == [("md5", MD5), ("sha1", SHA1), ("sha256", SHA256)]


@pytest.mark.parametrize("text", [
    MD5 + "ab",  # part of a longer hex run
    "ab" + SHA256,
    SHA256 + SHA256,
    "0x" + MD5,
    MD5 + "g",
    "1" * 32,  # all decimal digits: a number
    MD5[:-1],
])
def test_not_hashes(text):
    assert extract_iocs(text) == []


# --------------------------------------------------------------------------- CVE, CWE, ATT&CK


def test_vulnerability_ids():
    text = "CVE-2021-44228, cve-2024-3400 and CVE\u20112023\u20114966; CWE-79 cwe-079 CWE-1321."
    assert found(text) == [("cve", "CVE-2021-44228"), ("cve", "CVE-2024-3400"),
                           ("cve", "CVE-2023-4966"), ("cwe", "CWE-79"), ("cwe", "CWE-79"),
                           ("cwe", "CWE-1321")]
    assert extract_iocs("CVE-2021-123 CVE-1899-1234 XCVE-2021-44228 CVE-2021-44228x") == []


def test_attack_ids():
    assert found("T1059.001, T1566 (TA0001) and T1003.") == [
        ("attack", "T1059.001"), ("attack", "T1566"), ("attack", "TA0001"), ("attack", "T1003")]
    assert extract_iocs("t1059 T1059.0012 T12345 XT1059 T1059x") == []


def test_attack_group_software_ids_need_context():
    text = "G0016 used S0154 (mitigation M1036, campaign C0024, DS0009)"
    assert extract_iocs(text) == []
    assert values("MITRE ATT&CK: " + text, "attack") == ["G0016", "S0154", "M1036", "C0024", "DS0009"]


# --------------------------------------------------------------------------- Windows paths


@pytest.mark.parametrize(("text", "expected"), [
    (r"ran C:\Windows\System32\cmd.exe.", [r"C:\Windows\System32\cmd.exe"]),
    (r"C:\Program Files (x86)\Google\Chrome\Application\chrome.exe --x",
     [r"C:\Program Files (x86)\Google\Chrome\Application\chrome.exe"]),
    (r'"C:\Program Files\My App\app.exe" /silent', [r"C:\Program Files\My App\app.exe"]),
    (r'"C:\Users\Bob\My Documents"', [r"C:\Users\Bob\My Documents"]),
    (r"C:\Users\Bob\My Documents", [r"C:\Users\Bob\My"]),  # unquoted: the last name stops at a space
    (r"dropped to C:\Users\Public\, then ran (C:\Temp\a.exe).", [r"C:\Users\Public" "\\", r"C:\Temp\a.exe"]),
    (r"copied C:\Temp\a.exe to C:\x and C:\ProgramData and D:\y",
     [r"C:\Temp\a.exe", r"C:\x", r"C:\ProgramData", r"D:\y"]),
    (r"%APPDATA%\Microsoft\up.exe %ProgramFiles(x86)%\x\y.dll",
     [r"%APPDATA%\Microsoft\up.exe", r"%ProgramFiles(x86)%\x\y.dll"]),
    (r"\\10.0.0.5\C$\Windows\Temp\psexesvc.exe", [r"\\10.0.0.5\C$\Windows\Temp\psexesvc.exe"]),
    (r"\\fileserver\Shared Docs\Q3 Report\a.docx", [r"\\fileserver\Shared Docs\Q3 Report\a.docx"]),
    ('{"image": "C:\\\\Windows\\\\System32\\\\rundll32.exe"}', [r"C:\Windows\System32\rundll32.exe"]),
    (r"C:\ alone, x:\, \\server alone", []),
])
def test_windows_paths(text, expected):
    assert values(text, "windows_path") == expected


def test_windows_path_swallows_file_names_and_hashes():
    text = rf"C:\Users\x\AppData\Local\Temp\{MD5}.exe and C:\sites\evil.com\index.html"
    assert [ioc.kind for ioc in extract_iocs(text)] == ["windows_path", "windows_path"]


# --------------------------------------------------------------------------- registry keys


@pytest.mark.parametrize(("text", "expected"), [
    (r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run /v Updater",
     [r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run"]),
    (r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Image File Execution Options\sethc.exe.",
     [r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Image File Execution Options\sethc.exe"]),
    (r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\x",
     [r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\x"]),
    (r"HKU\S-1-5-21\Software HKCR\ms-settings\shell HKCC\System",
     [r"HKU\S-1-5-21\Software", r"HKCR\ms-settings\shell", r"HKCC\System"]),
    (r"Get-Item HKLM:\Software\Policies", [r"HKLM:\Software\Policies"]),
    (r'"HKLM\SYSTEM\CurrentControlSet\Services\Evil Svc"', [r"HKLM\SYSTEM\CurrentControlSet\Services\Evil Svc"]),
    (r"in C:\ProgramData and HKCU\Software\x", [r"HKCU\Software\x"]),
    ('"HKCU\\\\Software\\\\Run"', [r"HKCU\Software\Run"]),
    (r"HKLM alone, HKLMX\Software", []),
])
def test_registry_keys(text, expected):
    assert values(text, "registry_key") == expected


# --------------------------------------------------------------------------- POSIX paths


@pytest.mark.parametrize(("text", "expected"), [
    ("cat /etc/passwd.", ["/etc/passwd"]),
    ("chmod +x /tmp/x.sh && /tmp/x.sh", ["/tmp/x.sh", "/tmp/x.sh"]),
    ("~/.ssh/id_rsa ~/.bashrc", ["~/.ssh/id_rsa", "~/.bashrc"]),
    ("./run.sh ../../etc/shadow", ["./run.sh", "../../etc/shadow"]),
    ("`/var/log/auth.log`", ["/var/log/auth.log"]),
    ("/var/www/evil.com/index.php", ["/var/www/evil.com/index.php"]),
    ("--config=/etc/app/conf.yml", ["/etc/app/conf.yml"]),
    ("on 12/05/2024 and 2024/05/12", []),
    ("and/or TCP/IP I/O 24/7 10.0.0.0/8", []),
    ("cmd /c whoami /all", []),
    ("http://x.com/a/b evil.com/a/b", []),
    ("/tmp /", []),
])
def test_posix_paths(text, expected):
    assert values(text, "posix_path") == expected


# --------------------------------------------------------------------------- mixed and adversarial


def test_report_paragraph():
    text = (
        "The actor (G0016 in MITRE ATT&CK) sent phishing from billing[@]evil-update[.]com linking "
        "to hxxps://evil-update[.]com/inv.php, dropped C:\\Users\\Public\\svc.exe (SHA-256 "
        f"{SHA256}), set HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\svc and beaconed "
        "to 185.220.101.47:443 and [2001:db8::5]:8443, exploiting CVE-2023-4966 (CWE-119) via "
        "T1190; on Linux it read /etc/shadow."
    )
    assert found(text) == [
        ("attack", "G0016"),
        ("email", "billing@evil-update.com"),
        ("url", "https://evil-update.com/inv.php"),
        ("windows_path", "C:\\Users\\Public\\svc.exe"),
        ("sha256", SHA256),
        ("registry_key", "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\svc"),
        ("ipv4", "185.220.101.47:443"),
        ("ipv6", "[2001:db8::5]:8443"),
        ("cve", "CVE-2023-4966"),
        ("cwe", "CWE-119"),
        ("attack", "T1190"),
        ("posix_path", "/etc/shadow"),
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("e\u200bvil.com", ("domain", "evil.com")),
    ("1.2\u200b.3.4", ("ipv4", "1.2.3.4")),
    ("ht\u200btps://evil\u200c.com/a\u200db", ("url", "https://evil.com/ab")),
    ("\ufeffCVE-2021-44228", ("cve", "CVE-2021-44228")),
])
def test_zero_width_characters_do_not_hide_iocs(text, expected):
    (ioc,) = extract_iocs(text)
    assert (ioc.kind, ioc.value) == expected
    assert ioc.raw == text.lstrip("\ufeff") and not ioc.defanged


def test_unicode_neighbours():
    assert extract_iocs("ñ1.2.3.4 evil.comé") == []
    assert found("«1.2.3.4» — «evil.com»") == [("ipv4", "1.2.3.4"), ("domain", "evil.com")]
    assert extract_iocs("пример.рф") == []  # unicode domain names are not supported


@pytest.mark.parametrize("text", [
    "a" * 1_000_000, "." * 1_000_000, "1" * 1_000_000, "1." * 500_000, "a." * 500_000,
    ":" * 1_000_000, "/" * 1_000_000, "\\" * 1_000_000, "%" * 1_000_000, "a:" * 500_000,
    "[.]" * 300_000, "C:\\" * 300_000, "C:\\a " * 200_000, "http://" * 100_000,
    "http://x.com/" + ")" * 1_000_000, "a@" * 500_000, "HKCU\\" * 200_000, "C:\\" + "A " * 500_000,
])
def test_long_adversarial_inputs(text):
    iocs = extract_iocs(text)  # must finish (linear regexes), and be sane
    for ioc in iocs:
        assert text[ioc.start : ioc.end] == ioc.raw
    if set(text) <= set("a.1:/\\%[]"):
        assert iocs == []


def test_long_input_with_many_iocs():
    text = "see 10.0.0.1 and evil.com, " * 20_000
    iocs = extract_iocs(text)
    assert len(iocs) == 40_000
    assert unique_iocs(iocs) == {"ipv4": ["10.0.0.1"], "domain": ["evil.com"]}
