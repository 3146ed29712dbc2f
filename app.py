"""Cascade's Chalice app: registers blueprints, nothing heavy at import."""
from chalice import Chalice

from chalicelib.entrypoints.importer import importer_bp
from chalicelib.entrypoints.portal import portal_bp
from chalicelib.entrypoints.portal_auth import auth_bp
from chalicelib.entrypoints.rebalancer import rebalancer_bp
from chalicelib.entrypoints.reporter import reporter_bp
from chalicelib.entrypoints.sweeper import sweeper_bp
from chalicelib.entrypoints.switch import switch_bp

app = Chalice(app_name="cascade")
app.register_blueprint(switch_bp)
app.register_blueprint(sweeper_bp)
app.register_blueprint(rebalancer_bp)
app.register_blueprint(auth_bp)
app.register_blueprint(portal_bp)
app.register_blueprint(importer_bp)
app.register_blueprint(reporter_bp)


@app.route("/health")
def health():
    return {"status": "ok"}
