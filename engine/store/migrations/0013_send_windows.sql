-- Send windows (engine/core/send_window.py): the local hours a campaign may message
-- a recipient, {"start": "HH:MM", "end": "HH:MM", "timezone": IANA name or null};
-- NULL: any time. Recipients outside theirs wait `pending` (reason 'send_window').
ALTER TABLE campaigns ADD COLUMN send_window jsonb;
