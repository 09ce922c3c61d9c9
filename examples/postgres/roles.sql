-- agentguard on PostgreSQL: roles so that the agent's database role cannot vote, enrol or
-- erase. Run as the owner of schema "agentguard" after agentguard created it (any
-- `agentguard ... --store postgresql://owner@.../db` run as the owner creates and migrates it;
-- the roles below never can). Tested by tests/adversarial/test_signed_pg_roles.py.
--
--   agentguard_agent     the guard inside the agent's process (decorator, adapters, proxy)
--   agentguard_approver  approvers' `agentguard approvals approve` and `agentguard serve`
--
-- Votes live in requests.doc: only the approver role may write that column after a request
-- is created. The agent role creates requests, settles and consumes them (status), and
-- appends to the audit chain; it cannot change or delete an audit row, or write TOTP seeds.
-- Signed votes (assurance: signed) stay the real defence; these grants take away the rows.

CREATE ROLE agentguard_agent LOGIN;
CREATE ROLE agentguard_approver LOGIN;

GRANT USAGE ON SCHEMA agentguard TO agentguard_agent, agentguard_approver;
GRANT SELECT ON ALL TABLES IN SCHEMA agentguard TO agentguard_agent, agentguard_approver;

-- The guard's own state.
GRANT INSERT, UPDATE, DELETE ON
    agentguard.grants, agentguard.reauth, agentguard.otp_used, agentguard.failures,
    agentguard.lockouts, agentguard.events, agentguard.first_use, agentguard.cooldowns,
    agentguard.pins, agentguard.definitions
    TO agentguard_agent;
GRANT INSERT ON agentguard.requests TO agentguard_agent;
GRANT UPDATE (status, decided_at) ON agentguard.requests TO agentguard_agent;
-- The audit chain: append only.
GRANT INSERT ON agentguard.audit_log TO agentguard_agent;
GRANT UPDATE ON agentguard.audit_head TO agentguard_agent;

-- Approvers and serve: votes, and enrolling TOTP seeds (sealed).
GRANT UPDATE (status, decided_at, doc) ON agentguard.requests TO agentguard_approver;
GRANT INSERT, UPDATE ON agentguard.secrets TO agentguard_approver;
