"""Distributed marketing's use-cases, on the store (engine/db/dm.py) and the pure rules
(engine/logic/dm): the brand's library of versions (`library`), the partner's portal
(`portal`), the brand's side (`brand`), tracking and unsubscribes (`tracking`), and the mail
worker (`mailer`, run by `kairos mailer`). No web framework here."""
