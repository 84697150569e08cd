"""The first-run question when there is no broker account: try the demo market, or add an account.

"Add my account" must lead to the add-account form itself (it used to close the question and leave the
trader at an empty window), so the trader picks the broker here and the form for it opens.
"""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

DEMO = "demo"


class FirstRunDialog(QMessageBox):
    """``choice()`` after ``exec()``: "demo", "kite", "upstox", or None (closed)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Welcome to TrailStop")
        self.setIcon(QMessageBox.Icon.Information)
        self.setText("<b>No broker account yet.</b>")
        self.setInformativeText(
            "Try TrailStop on a simulated market first: place an order, watch the stop trail and fire, with"
            " no money at stake. Or add your Zerodha or Upstox API app now (Help > Getting started says how"
            " to get one); you can also add it later from Accounts."
        )
        self.demo = self.addButton("Try the demo market", QMessageBox.ButtonRole.AcceptRole)
        self.add_kite = self.addButton("Add my Zerodha account…", QMessageBox.ButtonRole.ActionRole)
        self.add_upstox = self.addButton("Add my Upstox account…", QMessageBox.ButtonRole.ActionRole)
        self.later = self.addButton("Later", QMessageBox.ButtonRole.RejectRole)
        self.setDefaultButton(self.demo)
        self.setEscapeButton(self.later)

    def choice(self) -> str | None:
        clicked = self.clickedButton()
        if clicked is self.demo:
            return DEMO
        if clicked is self.add_kite:
            return "kite"
        if clicked is self.add_upstox:
            return "upstox"
        return None
