"""ASC X12 850 purchase order (004010) -> canonical order, and the 855 acknowledgement.

Envelope: the ISA segment is fixed width (106 characters); its 4th character is the element
separator, its 105th the sub-element separator and its 106th the segment terminator. Line
breaks after terminators are tolerated (and mirrored in the 855). One interchange must carry
one functional group (GS*PO) with one 850: one order per call.

Issue paths: header segments by id ("BEG.BEG03", "CTT.CTT01", "IEA.IEA02"), N1 loops by entity
code ("N1[ST].N4.N404"), DTM by qualifier ("DTM[010].DTM02"), PO1 loops by 1-based position
("PO1[2].PO102") with their children under them ("PO1[2].DTM[010].DTM02").

Mapping choices:
- channel_order_id = purchase_order_number = BEG03; placed_at = BEG05 at 00:00 UTC.
- Currency from CUR02, default USD. Total from AMT*TT.
- Requested ship date: DTM 010 (requested ship), else 037 (ship not before), else 002
  (delivery requested); a DTM inside a PO1 loop overrides the header date for its line.
- Ship-to = the N1*ST loop (N102 company, N2 attention, N3 street, N4 city/state/zip/country,
  PER phone/email). N404 may be omitted for US addresses (X12's domestic default). A ship-to
  given only as a location code (N103/N104) is MISSING_SHIP_TO: dwf keeps no partner
  location tables.
- Customer: N1*BY (N104 = channel_customer_id, N102 = name) with PER*BD phone/email; without
  N1*BY the ISA sender id stands for the customer.
- Line: line_id = PO101 (else the PO1 position), quantity PO102 in unit PO103 as sent, unit
  price PO104 (unset when absent: the ERP applies the contract price), channel_sku = the BP
  (buyer part) id, else VP (vendor part), else the first id of the PO106.. pairs.
- Shipping method from TD5 (TD512 service level code, else the TD505 routing text).
- SDQ (destination quantities: one PO for many stores) and a line-level N1*ST are
  UNSUPPORTED_SEGMENT, as an order has a single ship-to.
- Envelope checks: SE01 segment count, CTT01 line count and CTT02 hash total, GE01/IEA01
  counts, and SE02/GE02/IEA02 against ST02/GS06/ISA13 (CONTROL_NUMBER_MISMATCH).

``X12Context`` is set whenever the ISA could be read, so that the gateway can answer even an
unusable 850 with a rejecting 855; it is None only with UNPARSEABLE_PAYLOAD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from dwf.common.v1 import common_pb2
from dwf.order.v1 import order_gateway_pb2
from services.order_gateway.adapters.common import (
    EXPEDITED,
    NEXT_DAY,
    AdaptedOrder,
    Issue,
    LinePaths,
    LineRegistry,
    address_lines,
    check_channel_order_id,
    check_ship_to,
    country_code,
    money,
    parse_ccyymmdd,
    parse_decimal,
    proto_date,
    quantity_of,
    service_level,
    set_attribute,
    timestamp_of,
    unparseable,
    valid_currency,
)

ISA_LENGTH = 106
# Widths of ISA01..ISA16.
_ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1)
_SHIP_DATE_QUALIFIERS = ("010", "037", "002")  # requested ship, ship not before, delivery
_ORDER_TYPES = frozenset({"SA", "NE", "DS", "RL"})  # stand-alone, new, drop ship, release
_N1_CHILDREN = frozenset({"N2", "N3", "N4", "REF", "PER", "SI", "FOB", "TD1", "TD3", "TD4", "TD5"})
# X12 element 284 (service level code).
_SERVICE_CODES = {
    **dict.fromkeys(
        ("ND", "NM", "ON", "SA", "NF", "NH", "PA", "PC", "PN", "PR", "9A", "D1"), NEXT_DAY
    ),
    **dict.fromkeys(("SC", "SE", "SM", "PS", "3D", "ES", "CX", "GP", "IE", "IX", "D2"), EXPEDITED),
}
ACK_STATUSES = frozenset({"IA", "IB", "IC", "ID", "IP", "IQ", "IR", "IS", "DR"})


class X12SyntaxError(ValueError):
    """The text is not an X12 interchange (no readable ISA)."""


@dataclass(frozen=True)
class Interchange:
    """An interchange split into segments and elements (segment id first, ISA included)."""

    element_separator: str
    sub_element_separator: str
    segment_terminator: str
    line_break: str  # "\n" / "\r\n" if the sender put line breaks after terminators
    segments: tuple[tuple[str, ...], ...]


def parse_interchange(text: str) -> Interchange:
    """Split an interchange using the separators its fixed-width ISA declares."""
    text = text.lstrip("\ufeff \t\r\n")
    if not text.startswith("ISA"):
        raise X12SyntaxError("the payload does not start with an ISA segment")
    if len(text) < ISA_LENGTH:
        raise X12SyntaxError(f"the ISA segment is shorter than {ISA_LENGTH} characters")
    element, sub_element, terminator = text[3], text[104], text[105]
    separators = {element, sub_element, terminator}
    if len(separators) != 3 or any(char.isalnum() or char == " " for char in separators):
        raise X12SyntaxError("the ISA declares unusable separators (ISA is fixed width)")
    isa = text[:105].split(element)
    if len(isa) != 17 or tuple(len(value) for value in isa[1:]) != _ISA_WIDTHS:
        raise X12SyntaxError(f"the ISA segment is not the fixed {ISA_LENGTH}-character layout")
    rest = text[ISA_LENGTH:]
    line_break = ""
    if terminator not in "\r\n":
        line_break = "\r\n" if rest.startswith("\r\n") else "\n" if rest.startswith("\n") else ""
    segments: list[tuple[str, ...]] = [tuple(isa)]
    for raw in rest.split(terminator):
        raw = raw.strip("\r\n")
        if not raw.strip():
            continue
        elements = raw.split(element)
        elements[0] = elements[0].strip()
        segments.append(tuple(elements))
    return Interchange(element, sub_element, terminator, line_break, tuple(segments))


@dataclass(frozen=True)
class X12Line:
    """One PO1 of the 850 as sent, echoed by the 855."""

    position: int  # 1-based index of the PO1 segment
    line_id: str
    line_number: str  # PO101
    quantity: str  # PO102
    unit: str  # PO103
    unit_price: str  # PO104
    price_basis: str  # PO105
    product_ids: tuple[tuple[str, str], ...]  # (qualifier, id) pairs of PO106..


@dataclass(frozen=True)
class X12Context:
    """What the 855 needs from the 850: envelope ids, control numbers, separators, the PO."""

    element_separator: str
    sub_element_separator: str
    segment_terminator: str
    line_break: str
    repetition_separator: str  # ISA11 ("U" in 004010)
    sender_qualifier: str  # ISA05, as sent (2 characters)
    sender_id: str  # ISA06, without padding
    receiver_qualifier: str  # ISA07, as sent (2 characters)
    receiver_id: str  # ISA08, without padding
    interchange_control_number: str  # ISA13
    version: str  # ISA12
    usage_indicator: str  # ISA15: P production, T test
    group_sender_id: str  # GS02
    group_receiver_id: str  # GS03
    group_control_number: str  # GS06
    group_version: str  # GS08
    transaction_control_number: str  # ST02
    po_number: str  # BEG03
    po_date: date | None  # BEG05
    lines: tuple[X12Line, ...] = ()


@dataclass(frozen=True)
class LineAck:
    """The acknowledgement of one PO1 line in the 855 (an ACK segment)."""

    line_id: str  # the PO101 line number as used for line_id
    status: str  # "IA" accepted, "IB" backordered, "IR" rejected, "IC" accepted with changes
    quantity: int  # quantity acknowledged, in the PO line's unit
    unit: str
    scheduled_date: date | None = None  # written as ACK04=068 (current schedule ship), ACK05


def _el(segment: tuple[str, ...], index: int) -> str:
    return segment[index].strip() if index < len(segment) else ""


def _same_number(left: str, right: str) -> bool:
    """Equal control numbers/counts, ignoring leading zeros."""
    if left.isascii() and left.isdigit() and right.isascii() and right.isdigit():
        return int(left) == int(right)
    return left == right


@dataclass
class _Loop:
    """A loop: its first segment and the segments that belong to it."""

    segment: tuple[str, ...]
    index: int
    children: list[tuple[str, ...]] = field(default_factory=list)

    def first(self, segment_id: str) -> tuple[str, ...] | None:
        return next((seg for seg in self.children if seg[0] == segment_id), None)


def adapt_x12(payload: bytes) -> AdaptedOrder:
    """Map one X12 850 interchange."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return unparseable(f"payload is not valid UTF-8: {exc.reason} at byte {exc.start}")
    try:
        interchange = parse_interchange(text)
    except X12SyntaxError as exc:
        return unparseable(str(exc))
    return _Reader(interchange).adapt()


class _Reader:
    """Walks one interchange: envelope checks, then the 850 body."""

    def __init__(self, interchange: Interchange) -> None:
        self.x = interchange
        self.issues: list[Issue] = []

    def issue(self, path: str, code: str, message: str) -> None:
        self.issues.append(Issue(path, code, message))

    def adapt(self) -> AdaptedOrder:
        segments = self.x.segments
        isa = segments[0]
        ids = [segment[0] for segment in segments]
        gs_at = [i for i, sid in enumerate(ids) if sid == "GS"]
        st_at = [i for i, sid in enumerate(ids) if sid == "ST"]
        gs = segments[gs_at[0]] if gs_at else None
        st = segments[st_at[0]] if st_at else None

        if gs is None:
            self.issue("GS", "MISSING_SEGMENT", "the interchange has no functional group (GS)")
        elif _el(gs, 1) != "PO":
            self.issue(
                "GS.GS01", "UNSUPPORTED_TRANSACTION", "the group is not purchase orders (PO)"
            )
        if len(gs_at) > 1:
            self.issue("GS[2]", "MULTIPLE_TRANSACTIONS", "one functional group per interchange")
        if len(st_at) > 1:
            self.issue("ST[2]", "MULTIPLE_TRANSACTIONS", "one 850 per interchange")
        body: list[tuple[str, ...]] = []
        if st is None:
            self.issue("ST", "MISSING_SEGMENT", "the interchange has no transaction set (ST)")
        else:
            if _el(st, 1) != "850":
                self.issue("ST.ST01", "UNSUPPORTED_TRANSACTION", f"{_el(st, 1)!r:.10} is not 850")
            body = self._check_envelope(isa, gs, st_at[0], len(st_at), len(gs_at))

        order, line_paths, po_number, po_date, lines = self._body(isa, body)
        usable = st is not None and _el(st, 1) == "850" and bool(po_number)
        context = X12Context(
            element_separator=self.x.element_separator,
            sub_element_separator=self.x.sub_element_separator,
            segment_terminator=self.x.segment_terminator,
            line_break=self.x.line_break,
            repetition_separator=isa[11],
            sender_qualifier=isa[5],
            sender_id=isa[6].strip(),
            receiver_qualifier=isa[7],
            receiver_id=isa[8].strip(),
            interchange_control_number=isa[13],
            version=isa[12],
            usage_indicator=isa[15],
            group_sender_id=(_el(gs, 2) if gs else "") or isa[6].strip(),
            group_receiver_id=(_el(gs, 3) if gs else "") or isa[8].strip(),
            group_control_number=_el(gs, 6) if gs else "",
            group_version=(_el(gs, 8) if gs else "") or "004010",
            transaction_control_number=_el(st, 2) if st else "",
            po_number=po_number,
            po_date=po_date,
            lines=tuple(lines),
        )
        for key, value in (
            ("x12.isa13", context.interchange_control_number),
            ("x12.gs06", context.group_control_number),
            ("x12.st02", context.transaction_control_number),
            ("x12.sender_qualifier", context.sender_qualifier.strip()),
            ("x12.sender_id", context.sender_id),
            ("x12.receiver_qualifier", context.receiver_qualifier.strip()),
            ("x12.receiver_id", context.receiver_id),
            ("x12.gs02", context.group_sender_id),
            ("x12.gs03", context.group_receiver_id),
            ("x12.version", context.group_version),
            ("x12.usage_indicator", context.usage_indicator),
        ):
            set_attribute(order.attributes, key, value)
        return AdaptedOrder(
            order if usable else None, self.issues, po_number, line_paths, x12=context
        )

    def _check_envelope(
        self,
        isa: tuple[str, ...],
        gs: tuple[str, ...] | None,
        st_index: int,
        st_count: int,
        gs_count: int,
    ) -> list[tuple[str, ...]]:
        """Trailer checks; returns the segments between ST and SE."""
        segments = self.x.segments
        st = segments[st_index]
        end = next(
            (
                i
                for i in range(st_index + 1, len(segments))
                if segments[i][0] in ("SE", "ST", "GE", "IEA")
            ),
            len(segments),
        )
        body = list(segments[st_index + 1 : end])
        if end == len(segments) or segments[end][0] != "SE":
            self.issue("SE", "MISSING_SEGMENT", "the transaction set has no trailer (SE)")
        else:
            se = segments[end]
            expected = end - st_index + 1
            if not _same_number(_el(se, 1), str(expected)):
                self.issue(
                    "SE.SE01",
                    "SEGMENT_COUNT_MISMATCH",
                    f"SE01 is {_el(se, 1)!r:.12} but the set has {expected} segments",
                )
            if not _same_number(_el(se, 2), _el(st, 2)):
                self.issue("SE.SE02", "CONTROL_NUMBER_MISMATCH", "SE02 differs from ST02")
        ge = next((s for s in segments[end:] if s[0] == "GE"), None)
        if ge is None:
            self.issue("GE", "MISSING_SEGMENT", "the functional group has no trailer (GE)")
        else:
            if not _same_number(_el(ge, 1), str(st_count)):
                self.issue(
                    "GE.GE01",
                    "TRANSACTION_COUNT_MISMATCH",
                    f"GE01 is {_el(ge, 1)!r:.12} but the group has {st_count} transaction sets",
                )
            if gs is not None and not _same_number(_el(ge, 2), _el(gs, 6)):
                self.issue("GE.GE02", "CONTROL_NUMBER_MISMATCH", "GE02 differs from GS06")
        iea = next((s for s in segments[end:] if s[0] == "IEA"), None)
        if iea is None:
            self.issue("IEA", "MISSING_SEGMENT", "the interchange has no trailer (IEA)")
        else:
            if not _same_number(_el(iea, 1), str(gs_count)):
                self.issue(
                    "IEA.IEA01",
                    "GROUP_COUNT_MISMATCH",
                    f"IEA01 is {_el(iea, 1)!r:.12} but the interchange has {gs_count} groups",
                )
            if not _same_number(_el(iea, 2), isa[13]):
                self.issue("IEA.IEA02", "CONTROL_NUMBER_MISMATCH", "IEA02 differs from ISA13")
        return body

    def _body(
        self, isa: tuple[str, ...], body: list[tuple[str, ...]]
    ) -> tuple[
        order_gateway_pb2.AcceptOrderRequest,
        dict[str, LinePaths],
        str,
        date | None,
        list[X12Line],
    ]:
        header: dict[str, tuple[str, ...]] = {}  # first occurrence of each header segment
        refs: list[tuple[str, ...]] = []
        header_dtm: dict[str, tuple[str, ...]] = {}
        n1_loops: dict[str, _Loop] = {}
        po1_loops: list[_Loop] = []
        current_n1: _Loop | None = None
        current_po1: _Loop | None = None
        summary = False
        for segment in body:
            sid = segment[0]
            if sid == "PO1":
                current_po1 = _Loop(segment, len(po1_loops) + 1)
                po1_loops.append(current_po1)
                continue
            if sid == "CTT":
                summary, current_po1 = True, None
                header.setdefault("CTT", segment)
                continue
            if sid == "AMT" and (summary or current_po1 is None) and _el(segment, 1) == "TT":
                header.setdefault("AMT", segment)
                continue
            if current_po1 is not None:
                current_po1.children.append(segment)
                continue
            if sid == "N1":
                code = _el(segment, 1)
                current_n1 = _Loop(segment, 0)
                if code in n1_loops:
                    if code == "ST":
                        self.issue("N1[ST]", "DUPLICATE_SEGMENT", "more than one ship-to (N1*ST)")
                else:
                    n1_loops[code] = current_n1
                continue
            if current_n1 is not None and sid in _N1_CHILDREN:
                current_n1.children.append(segment)
                continue
            current_n1 = None
            if sid == "REF":
                refs.append(segment)
            elif sid == "DTM":
                header_dtm.setdefault(_el(segment, 1), segment)
            else:
                header.setdefault(sid, segment)

        request = order_gateway_pb2.AcceptOrderRequest()
        request.channel.format = common_pb2.CHANNEL_FORMAT_X12_850
        po_number, po_date = self._beg(request, header.get("BEG"))
        currency = self._currency(header.get("CUR"))
        self._parties(request, isa, header, n1_loops)
        ship_date = self._ship_date(header_dtm, "")
        lines, line_paths = self._lines(request, po1_loops, currency, ship_date)
        self._summary(header.get("CTT"), header.get("AMT"), request, po1_loops, currency)

        td5 = header.get("TD5")
        ship_to_loop = n1_loops.get("ST")
        if td5 is None and ship_to_loop is not None:
            td5 = ship_to_loop.first("TD5")
        request.shipping_method = (
            _SERVICE_CODES.get(_el(td5, 12)) or service_level(_el(td5, 5))
            if td5 is not None
            else service_level()
        )

        attributes = request.attributes
        set_attribute(attributes, "x12.beg02", _el(header["BEG"], 2) if "BEG" in header else "")
        for ref in refs:
            set_attribute(attributes, f"x12.ref.{_el(ref, 1)}", _el(ref, 2) or _el(ref, 3))
        if ship_to_loop is not None:
            set_attribute(attributes, "x12.ship_to.qualifier", _el(ship_to_loop.segment, 3))
            set_attribute(attributes, "x12.ship_to.id", _el(ship_to_loop.segment, 4))
        if td5 is not None:
            set_attribute(attributes, "x12.td5.routing", _el(td5, 5))
        return request, line_paths, po_number, po_date, lines

    def _beg(
        self, request: order_gateway_pb2.AcceptOrderRequest, beg: tuple[str, ...] | None
    ) -> tuple[str, date | None]:
        if beg is None:
            self.issue("BEG", "MISSING_SEGMENT", "the 850 has no BEG segment")
            self.issue("BEG.BEG03", "MISSING_FIELD", "the purchase order number is required")
            return "", None
        if _el(beg, 1) != "00":
            self.issue(
                "BEG.BEG01",
                "UNSUPPORTED_PURPOSE",
                f"purpose {_el(beg, 1)!r:.6} is not an original order (00); changes go by 860",
            )
        if _el(beg, 2) not in _ORDER_TYPES:
            self.issue(
                "BEG.BEG02",
                "UNSUPPORTED_ORDER_TYPE",
                f"order type {_el(beg, 2)!r:.6} is not one of {sorted(_ORDER_TYPES)}",
            )
        po_number = _el(beg, 3)
        if check_channel_order_id(po_number, "BEG.BEG03", self.issues):
            request.channel.channel_order_id = po_number
            request.purchase_order_number = po_number
        po_date = None
        if not _el(beg, 5):
            self.issue("BEG.BEG05", "MISSING_FIELD", "the purchase order date is required")
        else:
            po_date = parse_ccyymmdd(_el(beg, 5))
            if po_date is None:
                self.issue("BEG.BEG05", "INVALID_DATE", f"{_el(beg, 5)!r:.12} is not CCYYMMDD")
            else:
                placed_at = timestamp_of(datetime(po_date.year, po_date.month, po_date.day))
                if placed_at is not None:
                    request.placed_at.CopyFrom(placed_at)
        return po_number, po_date

    def _currency(self, cur: tuple[str, ...] | None) -> str:
        if cur is None or not _el(cur, 2):
            return "USD"
        code = _el(cur, 2).upper()
        if not valid_currency(code):
            self.issue("CUR.CUR02", "UNSUPPORTED_CURRENCY", f"{code!r:.10} is not ISO 4217")
            return ""
        return code

    def _parties(
        self,
        request: order_gateway_pb2.AcceptOrderRequest,
        isa: tuple[str, ...],
        header: dict[str, tuple[str, ...]],
        n1_loops: dict[str, _Loop],
    ) -> None:
        ship_to_loop = n1_loops.get("ST")
        ship_to = self._address(ship_to_loop, "N1[ST]") if ship_to_loop else None
        n4_present = ship_to_loop is not None and ship_to_loop.first("N4") is not None
        hint = ""
        if ship_to_loop is not None and _el(ship_to_loop.segment, 4):
            location = f"{_el(ship_to_loop.segment, 3)} {_el(ship_to_loop.segment, 4)}".strip()
            hint = f"location {location} only; send N3/N4"
        check_ship_to(
            ship_to,
            self.issues,
            path="N1[ST]",
            line_path="N1[ST].N3",
            country_path="N1[ST].N4.N404" if n4_present else "N1[ST].N4",
            hint=hint,
        )
        if ship_to is not None:
            request.ship_to.CopyFrom(ship_to)
        bill_to_loop = n1_loops.get("BT")
        if bill_to_loop is not None:
            request.bill_to.CopyFrom(self._address(bill_to_loop, "N1[BT]"))

        buyer = n1_loops.get("BY")
        customer = request.customer
        customer.channel_customer_id = (_el(buyer.segment, 4) if buyer else "") or isa[6].strip()
        customer.name = _el(buyer.segment, 2) if buyer else ""
        contact = header.get("PER")
        if contact is None and buyer is not None:
            contact = buyer.first("PER")
        if contact is not None:
            customer.phone, customer.email = _phone_email(contact)
        if not customer.name and ship_to is not None:
            customer.name = ship_to.company or ship_to.name

    def _address(self, loop: _Loop, path: str) -> common_pb2.PostalAddress:
        n2 = loop.first("N2")
        n4 = loop.first("N4")
        per = loop.first("PER")
        street: list[tuple[str, str]] = []
        for n3 in (seg for seg in loop.children if seg[0] == "N3"):
            street += [(f"{path}.N3.N301", _el(n3, 1)), (f"{path}.N3.N302", _el(n3, 2))]
        phone, email = _phone_email(per) if per is not None else ("", "")
        country = ""
        if n4 is not None:
            country = country_code(_el(n4, 4)) or "US"
        return common_pb2.PostalAddress(
            name=_el(n2, 1) if n2 else "",
            company=_el(loop.segment, 2),
            lines=address_lines(self.issues, *street),
            locality=_el(n4, 1) if n4 else "",
            administrative_area=_el(n4, 2) if n4 else "",
            postal_code=_el(n4, 3) if n4 else "",
            region_code=country,
            phone=phone,
            email=email,
        )

    def _ship_date(self, dtms: dict[str, tuple[str, ...]], prefix: str) -> date | None:
        """The first readable requested ship date by qualifier preference."""
        found: date | None = None
        for qualifier in _SHIP_DATE_QUALIFIERS:
            dtm = dtms.get(qualifier)
            if dtm is None:
                continue
            parsed = parse_ccyymmdd(_el(dtm, 2))
            if parsed is None:
                self.issue(
                    f"{prefix}DTM[{qualifier}].DTM02",
                    "INVALID_DATE",
                    f"{_el(dtm, 2)!r:.12} is not CCYYMMDD",
                )
            elif found is None:
                found = parsed
        return found

    def _lines(
        self,
        request: order_gateway_pb2.AcceptOrderRequest,
        loops: list[_Loop],
        currency: str,
        header_ship_date: date | None,
    ) -> tuple[list[X12Line], dict[str, LinePaths]]:
        registry = LineRegistry(self.issues)
        registry.check_count(len(loops), "PO1")
        lines: list[X12Line] = []
        for loop in loops:
            seg, path = loop.segment, f"PO1[{loop.index}]"
            line_id = _el(seg, 1) or str(loop.index)
            pairs = [
                (_el(seg, i), _el(seg, i + 1), i + 1)
                for i in range(6, len(seg), 2)
                if _el(seg, i + 1)
            ]
            chosen = next(
                (p for q in ("BP", "VP") for p in pairs if p[0] == q), pairs[0] if pairs else None
            )
            sku_path = f"{path}.PO1{chosen[2]:02d}" if chosen else f"{path}.PO107"
            if chosen is None:
                self.issue(sku_path, "MISSING_FIELD", "the line names no product id (PO106/PO107)")
            line = request.lines.add(line_id=line_id, channel_sku=chosen[1] if chosen else "")
            line.quantity.value = self._quantity(_el(seg, 2), f"{path}.PO102")
            line.quantity.unit_of_measure = _el(seg, 3)
            if not _el(seg, 3):
                self.issue(f"{path}.PO103", "MISSING_FIELD", "the unit of measure is required")
            price_text = _el(seg, 4)
            if price_text:
                price = parse_decimal(price_text)
                try:
                    if price is None or price < 0:
                        raise ValueError(f"{price_text!r:.20} is not a non-negative number")
                    line.unit_price.CopyFrom(money(price, currency))
                except ValueError as exc:
                    self.issue(f"{path}.PO104", "INVALID_PRICE", str(exc))

            dtms: dict[str, tuple[str, ...]] = {}
            for child in loop.children:
                if child[0] == "DTM":
                    dtms.setdefault(_el(child, 1), child)
                elif child[0] == "SDQ":
                    self.issue(
                        f"{path}.SDQ",
                        "UNSUPPORTED_SEGMENT",
                        "destination quantities (SDQ) need one order per destination",
                    )
                elif child[0] == "N1" and _el(child, 1) == "ST":
                    self.issue(
                        f"{path}.N1[ST]",
                        "UNSUPPORTED_SEGMENT",
                        "a line-level ship-to needs one order per destination",
                    )
            ship_date = self._ship_date(dtms, f"{path}.") or header_ship_date
            if ship_date is not None:
                line.requested_ship_date.CopyFrom(proto_date(ship_date))

            registry.add(line_id, f"{path}.PO101", LinePaths(sku=sku_path, unit=f"{path}.PO103"))
            lines.append(
                X12Line(
                    position=loop.index,
                    line_id=line_id,
                    line_number=_el(seg, 1),
                    quantity=_el(seg, 2),
                    unit=_el(seg, 3),
                    unit_price=price_text,
                    price_basis=_el(seg, 5),
                    product_ids=tuple((q, v) for q, v, _ in pairs),
                )
            )
        return lines, registry.paths

    def _quantity(self, text: str, path: str) -> int:
        if not text:
            self.issue(path, "MISSING_FIELD", "the quantity is required")
            return 0
        number = parse_decimal(text)
        quantity = None if number is None else quantity_of(number)
        if quantity is None:
            self.issue(path, "INVALID_QUANTITY", f"{text!r:.20} is not a whole number > 0")
            return 0
        return quantity

    def _summary(
        self,
        ctt: tuple[str, ...] | None,
        amt: tuple[str, ...] | None,
        request: order_gateway_pb2.AcceptOrderRequest,
        loops: list[_Loop],
        currency: str,
    ) -> None:
        if ctt is not None:
            if not _same_number(_el(ctt, 1), str(len(loops))):
                self.issue(
                    "CTT.CTT01",
                    "LINE_COUNT_MISMATCH",
                    f"CTT01 is {_el(ctt, 1)!r:.12} but the 850 has {len(loops)} PO1 lines",
                )
            if _el(ctt, 2):
                quantities = [parse_decimal(_el(loop.segment, 2)) for loop in loops]
                expected = sum((q for q in quantities if q is not None), Decimal(0))
                declared = parse_decimal(_el(ctt, 2))
                if declared is None or declared != expected:
                    self.issue(
                        "CTT.CTT02",
                        "HASH_TOTAL_MISMATCH",
                        f"CTT02 is {_el(ctt, 2)!r:.20} but the PO102 quantities sum to {expected}",
                    )
        if amt is not None:
            total = parse_decimal(_el(amt, 2))
            try:
                if total is None:
                    raise ValueError(f"{_el(amt, 2)!r:.20} is not a number")
                request.total.CopyFrom(money(total, currency))
            except ValueError as exc:
                self.issue("AMT[TT].AMT02", "INVALID_AMOUNT", str(exc))


def _phone_email(per: tuple[str, ...]) -> tuple[str, str]:
    """Phone (TE) and email (EM) from a PER's qualifier/number pairs."""
    phone = email = ""
    for i in (3, 5, 7):
        qualifier, number = _el(per, i), _el(per, i + 1)
        if qualifier == "TE" and not phone:
            phone = number
        elif qualifier == "EM" and not email:
            email = number
    return phone, email


# --- 855 -----------------------------------------------------------------------------------


def build_855(
    ctx: X12Context,
    acks: list[LineAck] | None,
    *,
    accepted: bool,
    control_number: int,
    now: datetime,
    seller_order_number: str = "",
) -> str:
    """A complete 855 interchange answering the 850 of ``ctx``.

    Sender and receiver are swapped; ``control_number`` becomes ISA13 (9 digits), GS06 and
    GE02. BAK02 is AC (accepted, some line changed), AD (accepted, every line IA as ordered),
    AK (accepted without line detail), RJ (rejected) or RD (rejected with line detail). With
    ``acks`` each acknowledged line is echoed as its PO1 followed by an ACK; the optional
    ``seller_order_number`` goes to BAK08. ``now`` is written as given. Raises ValueError for
    an unknown line id, an unknown ACK status or a value that would break the syntax.
    """
    if not 1 <= control_number <= 999_999_999:
        raise ValueError("control_number must be 1..999999999")
    if len(ctx.sender_id) > 15 or len(ctx.receiver_id) > 15:
        raise ValueError("ISA ids are at most 15 characters")
    if len(ctx.sender_qualifier) > 2 or len(ctx.receiver_qualifier) > 2:
        raise ValueError("ISA id qualifiers are at most 2 characters")
    sep, term = ctx.element_separator, ctx.segment_terminator
    # The sub-element separator may legitimately appear in echoed (composite) data.
    reserved = {sep, term}

    def segment(*elements: str) -> str:
        values = list(elements)
        while len(values) > 1 and values[-1] == "":
            values.pop()  # X12 omits trailing empty elements
        for value in values:
            if any(char in value for char in reserved):
                raise ValueError(f"{value!r} contains an X12 separator")
        return sep.join(values) + term + ctx.line_break

    lines_by_id = {line.line_id: line for line in ctx.lines}
    detail: list[str] = []
    changed = False
    for ack in acks or []:
        line = lines_by_id.get(ack.line_id)
        if line is None:
            raise ValueError(f"line {ack.line_id!r} is not in the 850")
        if ack.status not in ACK_STATUSES:
            raise ValueError(f"unknown ACK status {ack.status!r}")
        if ack.quantity < 0:
            raise ValueError("acknowledged quantity must be >= 0")
        unit = ack.unit or line.unit
        ordered = parse_decimal(line.quantity)
        changed |= ack.status != "IA" or unit != line.unit or ordered != ack.quantity
        ids = [value for pair in line.product_ids for value in pair]
        detail.append(
            segment(
                "PO1",
                line.line_number,
                line.quantity,
                line.unit,
                line.unit_price,
                line.price_basis,
                *ids,
            )
        )
        schedule = ("068", ack.scheduled_date.strftime("%Y%m%d")) if ack.scheduled_date else ()
        detail.append(segment("ACK", ack.status, str(ack.quantity), unit, *schedule))

    if not accepted:
        ack_type = "RD" if acks else "RJ"
    elif acks is None:
        ack_type = "AK"
    else:
        ack_type = "AC" if changed else "AD"
    po_date = (ctx.po_date or now.date()).strftime("%Y%m%d")  # BAK04 is mandatory

    transaction = [
        segment("ST", "855", "0001"),
        segment("BAK", "00", ack_type, ctx.po_number, po_date, "", "", "", seller_order_number),
        *detail,
    ]
    if acks is not None:
        transaction.append(segment("CTT", str(len(detail) // 2)))
    transaction.append(segment("SE", str(len(transaction) + 1), "0001"))

    isa = sep.join(
        [
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            ctx.receiver_qualifier.ljust(2),
            ctx.receiver_id.ljust(15),
            ctx.sender_qualifier.ljust(2),
            ctx.sender_id.ljust(15),
            now.strftime("%y%m%d"),
            now.strftime("%H%M"),
            ctx.repetition_separator,
            ctx.version,
            f"{control_number:09d}",
            "0",
            ctx.usage_indicator,
            ctx.sub_element_separator,
        ]
    )
    if len(isa) + 1 != ISA_LENGTH:
        raise ValueError("the ISA would not be fixed width")
    return "".join(
        [
            isa + term + ctx.line_break,
            segment(
                "GS",
                "PR",
                ctx.group_receiver_id,
                ctx.group_sender_id,
                now.strftime("%Y%m%d"),
                now.strftime("%H%M"),
                str(control_number),
                "X",
                ctx.group_version,
            ),
            *transaction,
            segment("GE", "1", str(control_number)),
            segment("IEA", "1", f"{control_number:09d}"),
        ]
    )
