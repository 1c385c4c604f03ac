"""The event catalog: Contact ID codes, SIA DC-03 codes, and the mapping between them.

Rules:
- The tables are data (the text blocks below), parsed once at import into plain dicts, so the
  hot path is a dict lookup. Where they come from and which conflicting mappings were picked is
  in ``docs/event-catalog.md``.
- A Contact ID code's meaning of the qualifier is its ``role``: ``condition`` (E new, R restore),
  ``open_close`` (E opening/disarm, R closing/arm) or ``event`` (momentary; R has no meaning).
- A SIA code is a ``condition`` (an alarm, trouble, bypass or supervisory state that is later
  restored, ``pair`` naming its restore), a ``restore`` (``pair`` naming the condition it ends)
  or an ``event``.
- Mapping is for display and derived views only. The code the device sent is always kept raw;
  an unknown code maps to nothing (never to a made-up code such as ``YN``).
"""

from __future__ import annotations

import enum

from attrs import field, frozen, validators

from protocols.signal import ContactIdView, SiaView


class Category(enum.StrEnum):
    """What kind of event a code reports (how an operator's screen groups it)."""

    ALARM = "alarm"
    SUPERVISORY = "supervisory"
    TROUBLE = "trouble"
    OPEN_CLOSE = "open_close"
    BYPASS = "bypass"
    TEST = "test"
    OTHER = "other"


ROLES = ("condition", "restore", "event", "open_close")


@frozen
class CatalogEntry:
    """One code of the Contact ID or SIA table."""

    code: str
    name: str
    category: Category = field(converter=Category)
    role: str = field(validator=validators.in_(ROLES))
    # SIA: the restore of a condition, or the condition a restore ends. Contact ID: None.
    pair: str | None = None
    # Contact ID: the SIA code for qualifier E (and P) and for qualifier R.
    sia_event: str | None = None
    sia_restore: str | None = None


# code | name | category | role | SIA for E | SIA for R
_CID_TABLE = """
100|Medical|alarm|condition|MA|MH
101|Personal emergency|alarm|condition|QA|QH
102|Fail to report in|alarm|condition||
110|Fire|alarm|condition|FA|FH
111|Smoke|alarm|condition|FA|FH
112|Combustion|alarm|condition|FA|FH
113|Water flow|alarm|condition|WA|WH
114|Heat|alarm|condition|KA|KH
115|Pull station|alarm|condition|FA|FH
116|Duct|alarm|condition|FA|FH
117|Flame|alarm|condition|FA|FH
118|Near alarm|alarm|condition|FA|FH
120|Panic|alarm|condition|PA|PH
121|Duress|alarm|condition|HA|HH
122|Silent panic|alarm|condition|HA|HH
123|Audible panic|alarm|condition|PA|PH
124|Duress, access granted|alarm|condition|HA|HH
125|Duress, egress granted|alarm|condition|HA|HH
130|Burglary|alarm|condition|BA|BH
131|Perimeter|alarm|condition|BA|BH
132|Interior|alarm|condition|BA|BH
133|24-hour (safe)|alarm|condition|BA|BH
134|Entry/exit|alarm|condition|BA|BH
135|Day/night|alarm|condition|BA|BH
136|Outdoor|alarm|condition|BA|BH
137|Tamper|alarm|condition|TA|TR
138|Near alarm|alarm|condition|BA|BH
139|Intrusion verifier|alarm|condition|BA|BH
140|General alarm|alarm|condition|UA|UH
141|Polling loop open|alarm|condition|UA|UH
142|Polling loop short|alarm|condition|UA|UH
143|Expansion module failure|alarm|condition|ET|ER
144|Sensor tamper|alarm|condition|TA|TR
145|Expansion module tamper|alarm|condition|ES|EJ
146|Silent burglary|alarm|condition|BA|BH
147|Sensor supervision failure|alarm|condition|BZ|BR
150|24-hour non-burglary|alarm|condition|UA|UH
151|Gas detected|alarm|condition|GA|GH
152|Refrigeration|alarm|condition|ZA|ZH
153|Loss of heat|alarm|condition|ZA|ZH
154|Water leakage|alarm|condition|WA|WH
155|Foil break|alarm|condition|BA|BH
156|Day trouble|trouble|condition|BT|BJ
157|Low bottled gas level|alarm|condition|GA|GH
158|High temperature|alarm|condition|KA|KH
159|Low temperature|alarm|condition|ZA|ZH
161|Loss of air flow|alarm|condition|UA|UH
162|Carbon monoxide|alarm|condition|GA|GH
163|Tank level|alarm|condition|UA|UH
200|Fire supervisory|supervisory|condition|FS|FV
201|Low water pressure|supervisory|condition|SS|SR
202|Low CO2|supervisory|condition|FS|FV
203|Gate valve sensor|supervisory|condition|SS|SR
204|Low water level|supervisory|condition|SS|SR
205|Pump activated|supervisory|condition|SS|SR
206|Pump failure|supervisory|condition|SS|SR
300|System trouble|trouble|condition|YX|YZ
301|AC loss|trouble|condition|AT|AR
302|Low system battery|trouble|condition|YT|YR
303|RAM checksum bad|trouble|condition|YX|YZ
304|ROM checksum bad|trouble|condition|YX|YZ
305|System reset|trouble|event|YW|
306|Panel programming changed|trouble|event|YG|
307|Self-test failure|trouble|condition|YX|YZ
308|System shutdown|trouble|condition|YX|YZ
309|Battery test failure|trouble|condition|YT|YR
310|Ground fault|trouble|condition|YX|YZ
311|Battery missing/dead|trouble|condition|YM|YR
312|Power supply overcurrent|trouble|condition|YP|YQ
313|Engineer reset|other|event|YW|
320|Sounder/relay|trouble|condition|YA|YH
321|Bell 1|trouble|condition|YA|YH
322|Bell 2|trouble|condition|YA|YH
323|Alarm relay|trouble|condition|YA|YH
324|Trouble relay|trouble|condition|YA|YH
325|Reversing relay|trouble|condition|YA|YH
330|System peripheral trouble|trouble|condition|YX|YZ
331|Polling loop open|trouble|condition|YX|YZ
332|Polling loop short|trouble|condition|YX|YZ
333|Expansion module failure|trouble|condition|ET|ER
334|Repeater failure|trouble|condition|YX|YZ
335|Local printer out of paper|trouble|condition|VO|VI
336|Local printer failure|trouble|condition|VT|VR
337|Expansion module DC loss|trouble|condition|ET|ER
338|Expansion module low battery|trouble|condition|ET|ER
339|Expansion module reset|trouble|condition|ET|ER
341|Expansion module tamper|trouble|condition|ET|ER
342|Expansion module AC loss|trouble|condition|ET|ER
343|Expansion module self-test failure|trouble|condition|ET|ER
344|RF receiver jam detected|trouble|condition|XQ|XH
350|Communication trouble|trouble|condition|YC|YK
351|Telco 1 fault|trouble|condition|LT|LR
352|Telco 2 fault|trouble|condition|LT|LR
353|Long range radio transmitter fault|trouble|condition|YC|YK
354|Failure to communicate event|trouble|condition|YC|YK
355|Loss of radio supervision|trouble|condition|YC|YK
356|Loss of central polling|trouble|condition|YC|YK
357|Long range radio VSWR problem|trouble|condition|YC|YK
358|Periodic test failure|trouble|condition|YC|YK
359|Network failure|trouble|condition|YC|YK
370|Protection loop|trouble|condition|UT|UJ
371|Protection loop open|trouble|condition|UT|UJ
372|Protection loop short|trouble|condition|UT|UJ
373|Fire trouble|trouble|condition|FT|FJ
374|Exit error alarm (zone)|alarm|condition|EA|BH
375|Panic zone trouble|trouble|condition|PT|PJ
376|Hold-up zone trouble|trouble|condition|HT|HJ
377|Swinger trouble|trouble|condition|BD|BE
378|Cross-zone trouble|trouble|condition|BT|BJ
380|Sensor trouble|trouble|condition|UT|UJ
381|Loss of supervision, RF|trouble|condition|UY|UJ
382|Loss of supervision, RPM|trouble|condition|UY|UJ
383|Sensor tamper|trouble|condition|TA|TR
384|RF low battery|trouble|condition|XT|XR
385|Smoke detector high sensitivity|trouble|condition|FT|FJ
386|Smoke detector low sensitivity|trouble|condition|FT|FJ
387|Intrusion detector high sensitivity|trouble|condition|BT|BJ
388|Intrusion detector low sensitivity|trouble|condition|BT|BJ
389|Sensor self-test failure|trouble|condition|UT|UJ
391|Sensor watch trouble|trouble|condition|UT|UJ
392|Drift compensation error|trouble|condition|FT|FJ
393|Maintenance alert|trouble|condition|YX|YZ
400|Open/close|open_close|open_close|OP|CL
401|Open/close by user|open_close|open_close|OP|CL
402|Group open/close|open_close|open_close|OB|CB
403|Automatic open/close|open_close|open_close|OA|CA
404|Late to open/close|open_close|open_close|OJ|CJ
405|Deferred open/close|open_close|open_close|OP|CL
406|Cancel|open_close|event|OC|OC
407|Remote arm/disarm|open_close|open_close|OQ|CQ
408|Quick arm|open_close|open_close|OP|CL
409|Keyswitch open/close|open_close|open_close|OS|CS
411|Callback request made|other|event||
412|Successful download/access|other|event|RB|RB
413|Unsuccessful access|other|event|RU|
414|System shutdown command received|other|event|YX|
415|Dialer shutdown command received|other|event|YX|
416|Successful upload|other|event|RS|
420|Intercom (armed)|alarm|condition|UA|UH
421|Access denied|other|event|DD|
422|Access report by user|other|event|DG|
423|Forced access|alarm|condition|DF|DR
424|Egress denied|other|event|DD|
425|Egress granted|other|event|DX|
426|Access door propped open|trouble|condition|DM|DH
427|Access point door status monitor trouble|trouble|condition|DT|DR
428|Access point request-to-exit trouble|trouble|condition|DT|DR
429|Access program mode entry|other|event|RB|
430|Access program mode exit|other|event|RS|
431|Access threat level change|other|event||
432|Access relay/trigger failure|trouble|condition|DT|DR
433|Access request-to-exit shunt|other|event||
434|Access door status monitor shunt|other|event||
441|Armed stay|open_close|open_close|OP|NL
442|Keyswitch armed stay|open_close|open_close|OS|NL
450|Exception open/close|open_close|open_close|OP|CL
451|Early open/close|open_close|open_close|OK|CK
452|Late open/close|open_close|open_close|OJ|CJ
453|Failed to open|open_close|event|OI|
454|Failed to close|open_close|event|CI|
455|Auto-arm failed|open_close|event|CI|
456|Partial arm|open_close|open_close|OG|CG
457|Exit error (user)|open_close|event|EE|
458|User on premises|open_close|event|JP|
459|Recent close|open_close|event|CR|
461|Wrong code entry|alarm|event|DD|DD
462|Legal code entry|other|event|DO|DO
463|Re-arm after alarm|open_close|event||
464|Auto-arm time extended|open_close|event|CE|
465|Panic alarm reset|other|event||
466|Service on/off premises|other|event||
520|Sounder/relay disable|bypass|condition||
521|Bell 1 disable|bypass|condition||
522|Bell 2 disable|bypass|condition||
523|Alarm relay disable|bypass|condition||
524|Trouble relay disable|bypass|condition||
525|Reversing relay disable|bypass|condition||
530|Module addition|other|event||
531|Module removal|other|event||
551|Dialer disabled|bypass|condition||
552|Radio transmitter disabled|bypass|condition||
553|Remote upload/download disabled|bypass|condition||
570|Zone/sensor bypass|bypass|condition|BB|BU
571|Fire bypass|bypass|condition|FB|FU
572|24-hour zone bypass|bypass|condition|UB|UU
573|Burglary bypass|bypass|condition|BB|BU
574|Group bypass|bypass|condition|BB|BU
575|Swinger bypass|bypass|condition|BB|BU
576|Access zone shunt|bypass|condition|BB|BU
577|Access point bypass|bypass|condition|BB|BU
601|Manual trigger test|test|event|RX|
602|Periodic test|test|event|RP|
603|Periodic RF transmission|test|event|RP|
604|Fire test|test|condition|FI|FK
605|Status report to follow|other|event|YY|
606|Listen-in to follow|other|event|LF|
607|Walk test mode|test|condition|TS|TE
608|Periodic test, system trouble present|test|event|RY|
609|Video transmitter active|other|event||
611|Point tested OK|test|event|TP|
612|Point not tested|test|event||
613|Intrusion zone walk tested|test|event|BX|
614|Fire zone walk tested|test|event|FX|
615|Panic zone walk tested|test|event||
616|Service request|other|event|YX|
621|Event log reset|other|event||
622|Event log 50% full|other|event|JL|
623|Event log 90% full|other|event|JL|
624|Event log overflow|other|event|JO|
625|Time/date reset|other|event|JT|
626|Time/date inaccurate|trouble|event|JD|
627|Program mode entry|other|event|LB|
628|Program mode exit|other|event|LX|
629|32-hour event log marker|other|event||
630|Schedule change|other|event|JS|
631|Exception schedule change|other|event|JS|
632|Access schedule change|other|event|JS|
654|System inactivity|supervisory|event|NA|
"""

# Families of SIA codes that share a pattern: letter, family name, and the suffixes that exist.
_SIA_FAMILIES = """
B|Burglary|ABHJRSTUX
F|Fire|ABHJRSTUX
G|Gas|ABHJRSTUX
H|Holdup|ABHJRSTU
K|Heat|ABHJRSTU
M|Medical|ABHJRSTU
P|Panic|ABHJRSTU
Q|Emergency|ABHJRSTU
S|Sprinkler|ABHJRSTU
U|Untyped Zone|ABHJRSTU
W|Water|ABHJRSTU
Z|Freeze|ABHJRSTU
T|Tamper|ABHJRTU
"""

# suffix | name | category ("*" = the family's) | role | pair suffix
_SIA_SUFFIXES = """
A|Alarm|*|condition|H
H|Alarm Restore|*|restore|A
R|Restoral|*|restore|A
B|Bypass|bypass|condition|U
U|Unbypass|bypass|restore|B
T|Trouble|trouble|condition|J
J|Trouble Restore|trouble|restore|T
S|Supervisory|supervisory|condition|R
X|Test|test|event|
"""

# code | name | category | role | pair. Rows here override the family-generated ones.
_SIA_TABLE = """
AA|Alarm - Panel Substitution|alarm|event|
AB|Abort|other|event|
AF|Arming Event (scenario)|open_close|event|
AN|Analog Restoral|trouble|restore|AS
AR|AC Restoral|trouble|restore|AT
AS|Analog Service|trouble|condition|AN
AT|AC Trouble|trouble|condition|AR
BC|Burglary Cancel|open_close|event|
BD|Swinger Trouble|trouble|condition|BE
BE|Swinger Trouble Restore|trouble|restore|BD
BG|Unverified Event - Burglary|alarm|event|
BM|Burglary Alarm - Cross Point|alarm|condition|BH
BV|Burglary Verified|alarm|event|
BZ|Missing Supervision|alarm|condition|BR
CA|Automatic Closing|open_close|event|
CB|Group Closing|open_close|event|
CC|Unsuccessful Arming Attempt|open_close|event|
CD|Closing Delinquent|open_close|event|
CE|Closing Extend|open_close|event|
CF|Forced Closing|open_close|event|
CG|Close Area|open_close|event|
CI|Fail to Close|open_close|event|
CJ|Late Close|open_close|event|
CK|Early Close|open_close|event|
CL|Closing Report|open_close|event|
CM|Missing Alarm - Recent Closing|alarm|event|
CO|Command Sent|other|event|
CP|Automatic Closing|open_close|event|
CQ|Remote Closing|open_close|event|
CR|Recent Closing|open_close|event|
CS|Closing Keyswitch|open_close|event|
CT|Late to Open|open_close|event|
CW|Was Force Armed|open_close|event|
CX|Custom Function Executed|other|event|
CZ|Point Closing|open_close|event|
DA|Card Assigned|other|event|
DB|Card Deleted|other|event|
DC|Access Closed|other|event|
DD|Access Denied|other|event|
DE|Request to Enter|other|event|
DF|Door Forced|alarm|condition|DR
DG|Access Granted|other|event|
DH|Door Left Open - Restoral|trouble|restore|DM
DI|Access Denied - Passback|other|event|
DJ|Door Forced - Trouble|trouble|condition|DR
DK|Access Lockout|other|event|
DL|Door Left Open - Alarm|alarm|condition|DH
DM|Door Left Open - Trouble|trouble|condition|DH
DN|Door Left Open|other|event|
DO|Access Open|other|event|
DP|Access Denied - Unauthorized Time|other|event|
DQ|Access Denied - Unauthorized Arming State|other|event|
DR|Door Restoral|alarm|restore|DF
DS|Door Station|other|event|
DT|Access Trouble|trouble|condition|DR
DU|Dealer ID|other|event|
DV|Access Denied - Unauthorized Entry Level|other|event|
DW|Access Denied - Interlock|other|event|
DX|Request to Exit|other|event|
DY|Door Locked|other|event|
DZ|Access Denied - Door Secured|other|event|
EA|Exit Alarm|alarm|condition|BH
EE|Exit Error|open_close|event|
EJ|Expansion Tamper Restore|trouble|restore|ES
EM|Expansion Device Missing|trouble|condition|EN
EN|Expansion Missing Restore|trouble|restore|EM
ER|Expansion Restoral|trouble|restore|ET
ES|Expansion Device Tamper|trouble|condition|EJ
ET|Expansion Trouble|trouble|condition|ER
EX|External Device Condition|other|event|
EZ|Missing Alarm - Exit Error|alarm|event|
FC|Fire Cancel|open_close|event|
FG|Unverified Event - Fire|alarm|event|
FI|Fire Test Begin|test|condition|FK
FK|Fire Test End|test|restore|FI
FL|Fire Alarm Silenced|other|event|
FM|Fire Alarm - Cross Point|alarm|condition|FH
FQ|Fire Supervisory Trouble Restore|supervisory|restore|FW
FS|Fire Supervisory|supervisory|condition|FV
FV|Fire Supervision Restore|supervisory|restore|FS
FW|Fire Supervisory Trouble|supervisory|condition|FQ
FY|Missing Fire Trouble|trouble|condition|FJ
FZ|Missing Fire Supervision|supervisory|condition|FV
IA|Equipment Failure Condition|trouble|condition|IR
IR|Equipment Fail - Restoral|trouble|restore|IA
JA|User Code Tamper|alarm|condition|JC
JC|User Code Tamper Cancelled|alarm|restore|JA
JD|Date Changed|other|event|
JH|Holiday Changed|other|event|
JK|Latchkey Alert|other|event|
JL|Log Threshold|other|event|
JO|Log Overflow|other|event|
JP|User On Premises|open_close|event|
JR|Schedule Executed|other|event|
JS|Schedule Changed|other|event|
JT|Time Changed|other|event|
JV|User Code Changed|other|event|
JX|User Code Deleted|other|event|
JY|User Code Added|other|event|
JZ|User Level Set|other|event|
LB|Local Program|other|event|
LD|Local Program Denied|other|event|
LE|Listen-in Ended|other|event|
LF|Listen-in Begin|other|event|
LR|Phone Line Restoral|trouble|restore|LT
LS|Local Program Success|other|event|
LT|Phone Line Trouble|trouble|condition|LR
LU|Local Program Fail|other|event|
LX|Local Programming Ended|other|event|
MI|Message|other|event|
NA|No Activity|supervisory|event|
NB|Arming Event (scenario)|open_close|event|
NC|Network Condition|trouble|event|
ND|Night Mode Deactivated - Duress|alarm|event|
NE|Unsuccessful Night Mode Activation|open_close|event|
NF|Forced Perimeter Arm|open_close|event|
NL|Perimeter Armed|open_close|event|
NM|Perimeter Armed, User Defined|open_close|event|
NO|Night Mode Deactivated Automatically|open_close|event|
NP|Night Mode Deactivated Using Device|open_close|event|
NR|Network Restoral|trouble|restore|NT
NS|Activity Resumed|supervisory|event|
NT|Network Failure|trouble|condition|NR
OA|Automatic Opening|open_close|event|
OB|Group Opening|open_close|event|
OC|Cancel Report|open_close|event|
OG|Open Area|open_close|event|
OH|Early to Open from Alarm|open_close|event|
OI|Fail to Open|open_close|event|
OJ|Late Open|open_close|event|
OK|Early Open|open_close|event|
OL|Late to Open from Alarm|open_close|event|
OP|Opening Report|open_close|event|
OQ|Remote Opening|open_close|event|
OR|Disarm From Alarm|open_close|event|
OS|Opening Keyswitch|open_close|event|
OT|Late to Close|open_close|event|
OU|Output State - Trouble|trouble|condition|OV
OV|Output State - Restore|trouble|restore|OU
OZ|Point Opening|open_close|event|
PC|Photo on Demand Enabled|other|event|
PD|Photo on Demand Disabled|other|event|
PE|Photo by Scenario Enabled|other|event|
PF|Photo Channel Malfunction|trouble|condition|PO
PG|Photo by Scenario Disabled|other|event|
PO|Photo Channel Malfunction Restore|trouble|restore|PF
RA|Remote Programmer Call Failed|other|event|
RB|Remote Program Begin|other|event|
RC|Relay Close|other|event|
RD|Remote Program Denied|other|event|
RN|Remote Reset|other|event|
RO|Relay Open|other|event|
RP|Automatic Test|test|event|
RR|Power Up|other|event|
RS|Remote Program Success|other|event|
RT|Data Lost|trouble|event|
RU|Remote Program Fail|other|event|
RX|Manual Test|test|event|
RY|Test Off Normal|test|event|
SC|Change of State|other|event|
SM|LeakProtect Malfunction|trouble|event|
TC|All Points Tested|test|event|
TE|Test End|test|restore|TS
TH|Tamper Alarm Restore|alarm|restore|TA
TP|Walk Test Point|test|event|
TR|Tamper Restoral|alarm|restore|TA
TA|Tamper Alarm|alarm|condition|TR
TS|Test Start|test|condition|TE
TT|Tamper Trouble|trouble|condition|TJ
TW|Area Watch Start|other|event|
TX|Test Report|test|event|
TZ|Area Watch End|other|event|
UG|Unverified Event - Untyped|alarm|event|
UX|Undefined|other|event|
UY|Untyped Missing Trouble|trouble|condition|UJ
UZ|Untyped Missing Alarm|alarm|condition|UH
VI|Printer Paper In|trouble|restore|VO
VO|Printer Paper Out|trouble|condition|VI
VR|Printer Restore|trouble|restore|VT
VT|Printer Trouble|trouble|condition|VR
VX|Printer Test|test|event|
VY|Printer Online|other|event|
VZ|Printer Offline|other|event|
XA|Extra Account Report|other|event|
XC|Malfunction Restore|trouble|event|
XE|Extra Point|other|event|
XF|Extra RF Point|other|event|
XH|RF Interference Restoral|trouble|restore|XQ
XI|Sensor Reset|other|event|
XJ|RF Receiver Tamper Restoral|trouble|restore|XS
XL|Low Received Signal Strength|trouble|event|
XM|Missing Alarm - Cross Point|alarm|event|
XQ|RF Interference|trouble|condition|XH
XR|Transmitter Battery Restoral|trouble|restore|XT
XS|RF Receiver Tamper|trouble|condition|XJ
XT|Transmitter Battery Trouble|trouble|condition|XR
XW|Forced Point|open_close|event|
XX|Fail to Test|trouble|event|
YA|Bell Fault|trouble|condition|YH
YB|Busy Seconds|other|event|
YC|Communications Fail|trouble|condition|YK
YD|Receiver Line Card Trouble|trouble|condition|YE
YE|Receiver Line Card Restored|trouble|restore|YD
YF|Parameter Checksum Fail|trouble|event|
YG|Parameter Changed|other|event|
YH|Bell Restored|trouble|restore|YA
YI|Overcurrent Trouble|trouble|condition|YJ
YJ|Overcurrent Restore|trouble|restore|YI
YK|Communications Restoral|trouble|restore|YC
YM|System Battery Missing|trouble|condition|YR
YN|Invalid Report|trouble|event|
YO|Unknown Message|other|event|
YP|Power Supply Trouble|trouble|condition|YQ
YQ|Power Supply Restored|trouble|restore|YP
YR|System Battery Restoral|trouble|restore|YT
YS|Communications Trouble|trouble|condition|YK
YT|System Battery Trouble|trouble|condition|YR
YU|Diagnostic Error|trouble|event|
YW|Watchdog Reset|trouble|event|
YX|Service Required|trouble|condition|YZ
YY|Status Report|other|event|
YZ|Service Completed|trouble|restore|YX
ZY|Device Switched On|other|event|
ZZ|Device Switched Off|other|event|
"""

# Reverse mapping SIA -> Contact ID where the forward table is ambiguous (many CID codes map to
# one SIA code): the canonical (code, qualifier) a SIA-only event is shown as.
_SIA_TO_CID_OVERRIDES = """
BA|130|E
BH|130|R
BR|130|R
FA|110|E
FH|110|R
FR|110|R
HA|121|E
HH|121|R
PA|120|E
PH|120|R
TA|137|E
TR|137|R
TH|137|R
UA|150|E
UH|150|R
GA|151|E
GH|151|R
KA|158|E
KH|158|R
ZA|159|E
ZH|159|R
OP|401|E
CL|401|R
OG|456|E
CG|456|R
NL|441|R
YC|350|E
YK|350|R
YT|302|E
YR|302|R
ET|333|E
ER|333|R
UT|380|E
UJ|380|R
YX|300|E
YZ|300|R
BB|570|E
BU|570|R
RP|602|E
RX|601|E
FX|604|E
FK|604|R
DD|421|E
YW|305|E
"""


def _rows(text: str) -> list[list[str]]:
    return [line.split("|") for line in text.strip().splitlines()]


def _load_cid() -> dict[str, CatalogEntry]:
    table: dict[str, CatalogEntry] = {}
    for code, name, category, role, sia_e, sia_r in _rows(_CID_TABLE):
        if code in table:
            raise AssertionError(f"Contact ID code {code} listed twice")
        table[code] = CatalogEntry(
            code, name, Category(category), role, None, sia_e or None, sia_r or None
        )
    return table


def _load_sia() -> dict[str, CatalogEntry]:
    suffixes = {s: (n, c, r, p) for s, n, c, r, p in _rows(_SIA_SUFFIXES)}
    table: dict[str, CatalogEntry] = {}
    for letter, family, present in _rows(_SIA_FAMILIES):
        for suffix in present:
            name, category, role, pair = suffixes[suffix]
            table[letter + suffix] = CatalogEntry(
                letter + suffix,
                f"{family} {name}",
                Category.ALARM if category == "*" else Category(category),
                role,
                letter + pair if pair else None,
            )
    for code, name, category, role, pair in _rows(_SIA_TABLE):
        table[code] = CatalogEntry(code, name, Category(category), role, pair or None)
    return table


CID: dict[str, CatalogEntry] = _load_cid()
SIA: dict[str, CatalogEntry] = _load_sia()


def _load_reverse() -> dict[str, tuple[str, str]]:
    reverse: dict[str, tuple[str, str]] = {}
    for entry in CID.values():
        if entry.sia_event is not None:
            reverse.setdefault(entry.sia_event, (entry.code, "E"))
        if entry.sia_restore is not None:
            reverse.setdefault(entry.sia_restore, (entry.code, "R"))
    for sia, code, qualifier in _rows(_SIA_TO_CID_OVERRIDES):
        reverse[sia] = (code, qualifier)
    return reverse


SIA_TO_CID: dict[str, tuple[str, str]] = _load_reverse()


def cid_entry(code: str) -> CatalogEntry | None:
    """The Contact ID table's entry for a 3-digit event code, or None when unknown."""
    return CID.get(code)


def sia_entry(code: str) -> CatalogEntry | None:
    """The SIA table's entry for a two-letter event code, or None when unknown."""
    return SIA.get(code)


def sia_for_cid(cid: ContactIdView) -> str | None:
    """The SIA code that shows ``cid`` (qualifier E and P use the event code, R the restore)."""
    entry = CID.get(cid.code)
    if entry is None:
        return None
    if cid.qualifier == "R":
        return entry.sia_restore
    return entry.sia_event


def cid_for_sia(sia: SiaView) -> ContactIdView | None:
    """The Contact ID view of ``sia``: zone from the address, group from ``ri``.

    None when the code has no Contact ID counterpart or the address/area does not fit the
    3-digit zone or 2-digit group (a truncated zone would point at the wrong detector).
    """
    mapped = SIA_TO_CID.get(sia.code)
    if mapped is None:
        return None
    zone = _fit(sia.address, 3)
    group = _fit(sia.modifier("ri") or "", 2)
    if zone is None or group is None:
        return None
    code, qualifier = mapped
    return ContactIdView(qualifier, code, group, zone)


def _fit(number: str, width: int) -> str | None:
    if not number:
        return "0" * width
    if not number.isdigit() or not number.isascii():
        return None
    # Bound the digits before converting: int() refuses more than 4,300 of them (ValueError).
    significant = number.lstrip("0")
    if len(significant) > width:
        return None
    return significant.zfill(width)


def describe(cid: ContactIdView | None, sia: SiaView | None) -> tuple[str | None, str | None]:
    """Name and category for display: the Contact ID view first, then the SIA view."""
    if cid is not None:
        entry = CID.get(cid.code)
        if entry is not None:
            return _cid_name(entry, cid.qualifier), entry.category.value
    if sia is not None:
        entry = SIA.get(sia.code)
        if entry is not None:
            return entry.name, entry.category.value
    return None, None


def _cid_name(entry: CatalogEntry, qualifier: str) -> str:
    if entry.role == "open_close":
        if qualifier == "E":
            return f"{entry.name} (opening)"
        if qualifier == "R":
            return f"{entry.name} (closing)"
    elif entry.role == "condition" and qualifier == "R":
        return f"{entry.name} restore"
    if qualifier == "P":
        return f"{entry.name} (still present)"
    return entry.name
