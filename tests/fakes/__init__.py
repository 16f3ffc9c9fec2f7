"""Hand-written fakes of the platforms the bridge talks to, checked against their specs."""
