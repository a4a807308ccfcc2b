"""The console's words: Chinese first, English on request (the ``lang`` cookie)."""

from __future__ import annotations

from alerts.cases import LABEL as STATE_LABEL
from alerts.cases import State
from gridwatch import kinds
from gridwatch.events import IncidentKind, Level

LANGUAGES = ("zh", "en")
DEFAULT = "zh"

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "值班员控制台",
        "alerts": "实时预警",
        "broadcasts": "待批准广播",
        "cases": "案件",
        "silences": "静默",
        "false_alarms": "误报",
        "login": "登录",
        "logout": "退出",
        "name": "账号",
        "password": "密码",
        "login_failed": "账号或密码错误",
        "login_throttled": "失败次数过多，请稍后再试",
        "viewer": "只读",
        "duty_officer": "值班员",
        "no_alerts": "暂无预警",
        "waiting_count": "条红色预警广播待批准",
        "cap_text": "将发出的 CAP 1.2 报文（发出时由中继签名）",
        "approve": "批准播发",
        "reject": "驳回",
        "reason": "理由",
        "reason_required": "请填写理由",
        "none_waiting": "没有待批准的广播",
        "case": "案件",
        "kind": "类型",
        "level": "等级",
        "state": "状态",
        "grid": "网格",
        "opened": "受理时间",
        "due": "办结时限",
        "overdue": "超期",
        "broadcast": "广播",
        "timeline": "处置过程",
        "actor": "操作人",
        "action": "动作",
        "note": "备注",
        "time": "时间",
        "matchers": "匹配条件（每行一个 label=value）",
        "comment": "说明",
        "minutes": "时长（分钟）",
        "author": "创建人",
        "ends": "结束时间",
        "create_silence": "新建静默",
        "expire": "立即结束",
        "no_silences": "没有生效的静默",
        "detections": "最近的检测",
        "mark_false_alarm": "标记为误报",
        "case_optional": "案件编号（可选）",
        "marked": "已标记的误报",
        "source": "来源",
        "confidence": "置信度",
        "snapshot": "截图",
        "forbidden": "只有值班员可以执行此操作",
        "not_found": "未找到",
        "text_changed": "广播内容在您阅读后已变化，请重新核对",
        "back": "返回",
        "live": "实时",
        "incident": "事件",
    },
    "en": {
        "title": "Duty officer's console",
        "alerts": "Live alerts",
        "broadcasts": "Broadcasts to approve",
        "cases": "Cases",
        "silences": "Silences",
        "false_alarms": "False alarms",
        "login": "Log in",
        "logout": "Log out",
        "name": "Name",
        "password": "Password",
        "login_failed": "Wrong name or password",
        "login_throttled": "Too many failed attempts; try again later",
        "viewer": "viewer",
        "duty_officer": "duty officer",
        "no_alerts": "No alerts",
        "waiting_count": "red broadcast(s) waiting for approval",
        "cap_text": "The CAP 1.2 message that will go out (the relay signs it as it leaves)",
        "approve": "Approve broadcast",
        "reject": "Reject",
        "reason": "Reason",
        "reason_required": "Give a reason",
        "none_waiting": "No broadcast is waiting for approval",
        "case": "Case",
        "kind": "Kind",
        "level": "Level",
        "state": "State",
        "grid": "Grid",
        "opened": "Opened",
        "due": "Due",
        "overdue": "overdue",
        "broadcast": "Broadcast",
        "timeline": "Timeline",
        "actor": "Actor",
        "action": "Action",
        "note": "Note",
        "time": "Time",
        "matchers": "Matchers (one label=value a line)",
        "comment": "Comment",
        "minutes": "Duration (minutes)",
        "author": "Author",
        "ends": "Ends",
        "create_silence": "Create silence",
        "expire": "Expire now",
        "no_silences": "No silence in force",
        "detections": "Recent detections",
        "mark_false_alarm": "Mark as false alarm",
        "case_optional": "Case id (optional)",
        "marked": "Marked false alarms",
        "source": "Source",
        "confidence": "Confidence",
        "snapshot": "Snapshot",
        "forbidden": "Only a duty officer may do this",
        "not_found": "Not found",
        "text_changed": "The broadcast changed since you read it; review it again",
        "back": "Back",
        "live": "live",
        "incident": "Incident",
    },
}
ALERT_STATE_TEXT = {
    "zh": {"firing": "预警中", "resolved": "已解除"},
    "en": {"firing": "firing", "resolved": "resolved"},
}
LEVEL_TEXT = {
    "zh": {Level.YELLOW: "黄", Level.ORANGE: "橙", Level.RED: "红"},
    "en": {Level.YELLOW: "yellow", Level.ORANGE: "orange", Level.RED: "red"},
}


def language(requested: str | None) -> str:
    return requested if requested in LANGUAGES else DEFAULT


def words(lang: str) -> dict[str, str]:
    return TEXT[lang]


def level_text(lang: str, level: str) -> str:
    return LEVEL_TEXT[lang].get(Level(level), level) if level in set(Level) else level


def kind_text(lang: str, kind: str) -> str:
    if kind in set(IncidentKind):
        return kinds.incident(IncidentKind(kind)).label.of("zh" if lang == "zh" else "en")
    return kind.replace("_", " ")


def alert_state_text(lang: str, state: str) -> str:
    return ALERT_STATE_TEXT[lang].get(state, state)


def state_text(lang: str, state: str) -> str:
    if lang == "zh" and state in set(State):
        return STATE_LABEL[State(state)]
    return state
