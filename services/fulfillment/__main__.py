from services.fulfillment.main import main

main()
